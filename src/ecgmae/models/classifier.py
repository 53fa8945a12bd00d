"""ECGClassifier: a pre-trained encoder (loaded strictly), pooling and a linear head."""

from __future__ import annotations

import torch
from torch import nn

from ecgmae.config import ConfigError
from ecgmae.errors import CheckpointError
from ecgmae.models.config import EncoderConfig
from ecgmae.models.encoder import ECGEncoder, param_groups


class ECGClassifier(nn.Module):
    """Encoder + the encoder's pooling + dropout + linear head; logits for multi-label (sigmoid) use.

    Args:
        encoder_cfg: shape of the encoder to build (the one it was pre-trained with).
        num_classes: K outputs.
        head_dropout: dropout on the pooled features before the head.
    """

    def __init__(self, encoder_cfg: EncoderConfig, num_classes: int, *, head_dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes: must be >= 1, got {num_classes}")
        self.encoder = ECGEncoder(encoder_cfg)
        self.num_classes = num_classes
        self.encoder_frozen = False
        self.drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.encoder.pooled_dim(), num_classes)
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def load_encoder(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load pre-trained encoder weights strictly (every key, every shape).

        Accepts an encoder's ``state_dict()`` or a whole MAE state dict (``encoder.`` keys are taken).

        Raises:
            CheckpointError: naming missing, unexpected or mis-shaped keys.
        """
        if any(k.startswith("encoder.") for k in state_dict):
            state_dict = {k[len("encoder.") :]: v for k, v in state_dict.items() if k.startswith("encoder.")}
        own = self.encoder.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        shapes = [
            f"{k}: {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
            for k, v in own.items()
            if k in state_dict and state_dict[k].shape != v.shape
        ]
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
        if shapes:
            problems.append(f"shape mismatch {'; '.join(shapes[:8])}")
        if problems:
            raise CheckpointError(
                "encoder weights do not fit this encoder config (" + "; ".join(problems) + "); "
                "build the classifier from the checkpoint's own encoder config"
            )
        self.encoder.load_state_dict(state_dict, strict=True)

    def freeze_encoder(self) -> None:
        """Linear probing: encoder weights fixed and kept in eval mode (no drop-path); head trains."""
        self.encoder_frozen = True
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> ECGClassifier:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def forward_features(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, n(+1), D)`` encoder tokens."""
        return self.encoder.forward_features(x, lead_idx=lead_idx)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, n(+1), D) -> (B, K)`` logits, or the pooled, dropped-out ``(B, F)`` features when ``pre_logits``."""
        feats = self.drop(self.encoder.forward_head(tokens))  # (B, F)
        return feats if pre_logits else self.head(feats)

    def forward(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, K)`` logits."""
        return self.forward_head(self.forward_features(x, lead_idx=lead_idx))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, T) -> (B, K)`` sigmoid probabilities."""
        return torch.sigmoid(self.forward(x, lead_idx=lead_idx).float())

    def param_groups(self, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
        """Fine-tuning groups with layer-wise LR decay.

        Layer 0 is the patch embedding and position/lead/cls embeddings, layer ``i + 1`` is block
        ``i``, the top layer (``depth + 1``) the final norm and the head, with
        ``lr_scale = layer_decay ** (depth + 1 - layer)``. Frozen parameters are left out.

        Args:
            weight_decay: for weight matrices; biases, norms and embeddings get 0.
            layer_decay: e.g. 0.75; 1.0 = the same LR everywhere.
        """
        top = self.encoder.depth + 1

        def layer_of(name: str) -> int:
            return self.encoder.layer_id(name[len("encoder.") :]) if name.startswith("encoder.") else top

        return param_groups(
            self.named_parameters(), weight_decay, layer_decay=layer_decay, layer_of=layer_of, num_layers=top
        )
