"""Model construction from the configuration: ResNet50 (torchvision) or FourCastNet (AFNO)."""

from __future__ import annotations

from torch import nn

from trainer.config import TrainConfig


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    if config.model == "resnet50":
        from torchvision.models import resnet50

        return resnet50(weights=None, num_classes=num_classes)
    from trainer.models.afno import AFNONet

    return AFNONet(config.afno, checkpointing=config.activation_checkpointing)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Rollout(nn.Module):
    """FourCastNet forecast of `steps` 6-hour steps, each fed the previous output (two steps in
    fine-tuning). One module, so DDP sees one forward per backward."""

    def __init__(self, model: nn.Module, steps: int):
        super().__init__()
        self.model, self.steps = model, steps

    def forward(self, x):
        import torch

        outputs = []
        for _ in range(self.steps):
            x = self.model(x)
            outputs.append(x)
        return outputs[0] if self.steps == 1 else torch.cat(outputs, dim=1)
