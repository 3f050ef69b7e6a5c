"""``vac``: visual enhancement (CTC on an auxiliary conv head) and visual alignment (distillation).

Loss: w_seq·CTC(seq) + w_conv·CTC(conv) [VE] + w_va·τ²·KL(sg(seq) ‖ conv) [VA], τ = ``vac.tau``,
blank excluded; following VAC's official code (docs/methods.md#vac).
"""

from __future__ import annotations

from ctca.losses.distill import seq_kd
from ctca.methods.base import Method, require_conv_head


class VAC(Method):
    name = "vac"
    sections = ("loss", "vac")
    ctc_heads = (("seq", "ctc_seq"), ("conv", "ctc_conv"))

    @classmethod
    def check_params(cls, params) -> None:
        require_conv_head(params)

    def model_config(self, num_classes: int) -> dict:
        return {**super().model_config(num_classes), "conv_head": "separate"}

    def extra_terms(self, model, out, batch):
        vac = self.params.vac
        va = seq_kd(out.heads["conv"], out.heads["seq"], tau=vac.tau,
                    lengths=out.lengths if vac.mask_padding else None)
        return {"va": (va, self.weights.va)}

    def describe(self) -> list[str]:
        return [*super().describe(), "va"]
