"""The Python face of a trained model: ``model = ecgmae.load("runs/mae")``, then embed / predict / reconstruct.

A checkpoint (a run directory or one ``.safetensors`` file) carries the model config and the
preprocessing its weights expect, so new records in mV at any sampling rate (not below the model's)
are resampled, filtered and normalised exactly as the training data were. Nothing is unpickled.

    model = ecgmae.load("runs/ft")                  # a classifier run (or an encoder run)
    z = model.embed(signal, fs=500)                 # (D,) for one (leads, samples) record
    p = model.predict(signal, fs=500)               # {"AF": 0.91, ...}
    r = model.reconstruct(signal, fs=500)           # original, mask, reconstruction in mV (MAE runs)
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import torch

from ecgmae.checkpoint import load_model
from ecgmae.config import ConfigError, replace
from ecgmae.data.corpus import Chunk, Gathered, collect, iter_source, scored_chunks
from ecgmae.data.prepared import Prepared, prepare_signal, split_inputs
from ecgmae.data.record import lead_positions
from ecgmae.data.signal import PreprocessConfig
from ecgmae.errors import CheckpointError, DataError
from ecgmae.guards import check_device
from ecgmae.header import RunHeader
from ecgmae.inference import (
    Forward,
    at_precision,
    infer_records,
    input_rows,
    tokenization,
    warn_inputs,
    window_batches,
)
from ecgmae.models import ECGMAE, ECGEncoder, EncoderConfig, XResNet1d
from ecgmae.reconstruction import Reconstruction, reconstruct_windows
from ecgmae.utils import log

__all__ = ["Chunk", "Gathered", "Model", "Reconstruction", "load", "pick_device"]


class _Scorer(Protocol):
    """What the API calls on a classifier (transformer or reference CNN) or an encoder module."""

    def forward_features(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...

    def predict_proba(self, x: torch.Tensor, lead_idx: torch.Tensor | None = None) -> torch.Tensor: ...


def load(path: str | Path, *, device: str | torch.device = "cpu") -> Model:
    """Load a trained model from a run directory or a ``.safetensors`` checkpoint.

    A run directory resolves to ``classifier.safetensors``, else ``encoder.safetensors``, else
    ``mae.safetensors``. Only the safetensors header and tensors are read; a pickle (``.ckpt``,
    ``.pt``) is refused before any of it is used.

    Args:
        path: run directory or weight file.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).

    Raises:
        CheckpointError: missing file, not safetensors, a newer format version, or a header that
            does not describe the weights.
        ConfigError: ``device`` is not a device this machine has.
    """
    dev = check_device(device)  # a device this machine lacks is refused before anything is read
    # refuses non-safetensors files before any tensor is read, and checks the header against the tensors
    # before any module is built
    net, header, file = load_model(path)
    return Model(file, header, net, dev)


def pick_device(device: str | torch.device = "auto") -> str | torch.device:
    """``"auto"``: ``"cuda"`` when a GPU is visible, else ``"cpu"``; any other value unchanged."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _preprocessing(file: Path, header: RunHeader) -> tuple[PreprocessConfig, int, int | None, str]:
    """Stored preprocessing, window and evaluation stride (samples) and window aggregation."""
    d = header.data
    missing = [k for k in ("fs", "leads", "window_samples") if not getattr(d, k)]
    if missing:
        raise CheckpointError(f"{file}: header lacks data.{', data.'.join(missing)} (needed to prepare inputs)")
    if d.preprocessing:
        cfg = PreprocessConfig.from_dict(d.preprocessing, where=f"{file}: data.preprocessing")
    else:
        log.warning("%s: no stored preprocessing; inputs are only resampled to %g Hz", file, d.fs)
        try:
            cfg = PreprocessConfig(fs=d.fs, leads=d.leads, bandpass=None)  # type: ignore[arg-type]
        except ConfigError as e:
            raise CheckpointError(f"{file}: data: {e}") from None
    if abs(cfg.fs - float(d.fs)) > 1e-6 or tuple(cfg.leads) != d.leads:  # type: ignore[arg-type]
        raise CheckpointError(
            f"{file}: data.preprocessing ({cfg.fs:g} Hz, {','.join(cfg.leads)}) disagrees with "
            f"data.fs/leads ({d.fs} Hz, {','.join(d.leads)})"
        )
    return cfg, d.window_samples, d.eval_stride_samples, d.aggregate or "mean"  # type: ignore[return-value]


class Model:
    """A trained encoder, masked autoencoder or classifier with the preprocessing its weights expect.

    Build it with :func:`load`. ``signal`` arguments take one record ``(leads, samples)`` in mV, a
    batch ``(B, leads, samples)``, a list of records of different lengths, or
    :class:`~ecgmae.data.io.Record` objects (which carry their own ``fs`` and leads). ``leads`` names
    the rows (any case; default: the model's leads in order). Records of any length are cut into
    windows of the trained length (shorter ones are zero-padded) and window outputs are pooled.
    """

    def __init__(self, path: Path, header: RunHeader, net: torch.nn.Module, device: str | torch.device) -> None:
        self.path = Path(path)
        self.header = header  # the checkpoint's typed RunHeader: model, data, training, labels, metrics
        self.device = torch.device(device)
        self._net = net.to(self.device)
        self.preprocessing, window, stride, self.aggregate = _preprocessing(self.path, header)
        patch = header.model.data.window_multiple  # the patch size; 1 for a CNN
        self.window = max(patch, window // patch * patch)
        self.stride = stride or self.window
        self._positions = lead_positions(self.leads) or list(range(len(self.leads)))
        self._mae: ECGMAE | None = net if isinstance(net, ECGMAE) else None

    def __repr__(self) -> str:
        return (
            f"Model({str(self.path)!r}, kind={self.kind!r}, fs={self.fs:g}, leads={len(self.leads)}, "
            f"window={self.window}, embed_dim={self.embed_dim}, labels={len(self.label_names)})"
        )

    # -------------------------------------------------------------------------------- properties
    @property
    def info(self) -> dict[str, Any]:
        """The checkpoint header as stored (current format); :attr:`header` is the same, typed."""
        return self.header.to_dict()

    @property
    def kind(self) -> str:
        """``classifier``, ``encoder`` or ``mae``."""
        return self.header.kind

    @property
    def label_names(self) -> list[str]:
        """Class names of a classifier's outputs, in order (empty for encoders)."""
        return list(self.header.label_names)

    @property
    def fs(self) -> float:
        """Sampling rate (Hz) the model works at; inputs are resampled to it."""
        return self.preprocessing.fs

    @property
    def leads(self) -> tuple[str, ...]:
        """The leads the model was trained on, in its input order."""
        return self.preprocessing.leads

    @property
    def encoder_config(self) -> EncoderConfig:
        """The encoder's shape (tokenisation, width, patch size...)."""
        return self.encoder.cfg

    @property
    def embed_dim(self) -> int:
        """Length of an embedding."""
        if self.header.model.encoder is None:  # a reference CNN
            return int(cast(XResNet1d, self._net).num_features)
        return self.encoder.pooled_dim()

    @property
    def module(self) -> torch.nn.Module:
        """The torch module (``ECGClassifier``, ``ECGEncoder`` or ``ECGMAE``), in eval mode."""
        return self._net

    @property
    def encoder(self) -> ECGEncoder:
        """The encoder inside :attr:`module`."""
        net = self._net
        if not isinstance(net, ECGEncoder) and not hasattr(net, "encoder"):
            raise CheckpointError(f"{self.path}: a {type(net).__name__} classifier has no transformer encoder")
        return net if isinstance(net, ECGEncoder) else net.encoder  # type: ignore[return-value]

    @property
    def lead_idx(self) -> list[int]:
        """Canonical position of each of :attr:`leads` (the ``lead_idx`` the module takes for full input)."""
        return list(self._positions)

    # ---------------------------------------------------------------------------------- user API
    def embed(
        self,
        signal: Any,
        fs: float | Sequence[float] | None = None,
        leads: Sequence[str] | None = None,
        *,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Pooled encoder features: ``(D,)`` for one record, ``(B, D)`` float32 for a batch or list.

        Each window's tokens are pooled as the encoder's ``pool`` says (``mean``, ``cls``, ``meanstd`` or
        ``stats``: :attr:`embed_dim` features), then the windows of a record are averaged.
        """
        preps, single = self.prepare(signal, fs, leads)
        z = self.embed_prepared(preps, batch_size=batch_size)
        return z[0] if single else z

    def predict(
        self,
        signal: Any,
        fs: float | Sequence[float] | None = None,
        leads: Sequence[str] | None = None,
        *,
        batch_size: int = 64,
    ) -> dict[str, float] | list[dict[str, float]]:
        """Class probabilities by label name: a dict for one record, a list of dicts for a batch.

        Window probabilities are combined per record as in the classifier's evaluation (its stored
        ``aggregate``, mean or max).
        """
        preps, single = self.prepare(signal, fs, leads)
        probs = self.predict_prepared(preps, batch_size=batch_size)
        out = [dict(zip(self.label_names, map(float, row), strict=True)) for row in probs]
        return out[0] if single else out

    def predict_proba(
        self,
        signal: Any,
        fs: float | Sequence[float] | None = None,
        leads: Sequence[str] | None = None,
        *,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Probabilities as an array: ``(K,)`` for one record, ``(B, K)`` for a batch (columns = label_names)."""
        preps, single = self.prepare(signal, fs, leads)
        probs = self.predict_prepared(preps, batch_size=batch_size)
        return probs[0] if single else probs

    def prepare(
        self, signal: Any, fs: float | Sequence[float] | None = None, leads: Sequence[str] | None = None
    ) -> tuple[list[Prepared], bool]:
        """Check and preprocess inputs: the :class:`~ecgmae.data.prepared.Prepared` records, and whether one was
        given."""
        items, single = split_inputs(signal, fs, leads)
        return [prepare_signal(x, f, names, self.preprocessing, name=n) for n, x, f, names in items], single

    def embed_prepared(self, items: Sequence[Prepared], *, batch_size: int = 64, precision: str = "fp32") -> np.ndarray:
        """``(len(items), D)`` float32 embeddings of records already in the model's input space.

        ``precision="bf16"``: matrix products in bfloat16, faster on CPUs that have it, not bit-identical
        (:data:`ecgmae.inference.PRECISIONS`).
        """
        net = cast(_Scorer, self._net if self.kind == "classifier" else self.encoder)

        def fn(x: torch.Tensor, li: torch.Tensor | None) -> torch.Tensor:
            return net.forward_head(net.forward_features(x, lead_idx=li), pre_logits=True)

        return self._per_record(items, fn, "mean", batch_size, precision).astype(np.float32)

    def predict_prepared(
        self, items: Sequence[Prepared], *, batch_size: int = 64, precision: str = "fp32"
    ) -> np.ndarray:
        """``(len(items), K)`` float64 probabilities of records already in the model's input space (``precision``:
        as for :meth:`embed_prepared`)."""
        net = cast(_Scorer, self._net)
        if self.kind != "classifier":
            raise CheckpointError(
                f"{self.path}: holds {self.kind} weights; predict needs a classifier run "
                "(ecgmae finetune); use embed() for features"
            )

        def fn(x: torch.Tensor, li: torch.Tensor | None) -> torch.Tensor:
            return net.predict_proba(x, lead_idx=li)

        return self._per_record(items, fn, self.aggregate, batch_size, precision)

    def run_source(self, source: str, src: str | Path, **options: Any) -> Gathered:
        """Embed (or with ``predict=True``, score) every record of a corpus or a store, in source order.

        :meth:`stream_source` (same arguments) with every chunk collected in memory; ``ecgmae embed`` and
        ``ecgmae predict`` write the chunks as they come instead.

        Returns:
            ``(ids, values, skipped)``: used record ids, ``(len(ids), D or K)`` outputs, skipped records.
        """
        return collect(self.stream_source(source, src, **options))

    def stream_source(
        self,
        source: str,
        src: str | Path,
        *,
        predict: bool = False,
        labels: str | Path | None = None,
        task: str | None = None,
        options: dict[str, Any] | None = None,
        split: str | None = None,
        workers: int = 0,
        on_error: str = "skip",
        batch_size: int = 64,
        quiet: bool = False,
        precision: str = "fp32",
    ) -> Iterator[Chunk]:
        """Embed (or with ``predict``, score) every record of a corpus or a store, chunk by chunk in source order.

        What ``ecgmae embed`` and ``ecgmae predict`` run: records stream through the stored preprocessing
        (:func:`ecgmae.data.corpus.iter_source`, read in ``workers`` processes that stay a bounded distance
        ahead), are scored a chunk at a time and come out as :class:`~ecgmae.data.corpus.Chunk` s; unusable
        ones are skipped with their reason (``on_error="skip"``) or stop the run (``"fail"``). Memory does
        not grow with the corpus.

        Args:
            source: ``store`` or a source name as for ``ecgmae prepare`` (``folder``, ``ptbxl``...).
            src: corpus folder or file, or a store folder.
            predict: probabilities (a classifier run only) instead of embeddings.
            labels, task, options: as for ``ecgmae prepare`` (``options``: ``src_fs``, ``src_leads``...).
            split: with a store, only this split.
            workers: reader processes (0: read in this process, between chunks). Each takes about as much
                CPU per record as the model (``ecgmae_small``, 10 s, 12 leads, 500 Hz files), so on two cores
                one process reading while this one runs the model on one torch thread is the fastest.
            precision: ``fp32`` (the same numbers every time) or ``bf16`` (faster where the CPU has it).
        """
        if predict and self.kind != "classifier":
            raise CheckpointError(
                f"{self.path}: holds {self.kind} weights; predict needs a classifier run "
                "(ecgmae finetune); `ecgmae embed` gives features"
            )
        run = self.predict_prepared if predict else self.embed_prepared
        stream = iter_source(
            source,
            src,
            self.preprocessing,
            labels=labels,
            task=task,
            options=options,
            split=split,
            workers=workers,
            quiet=quiet,
        )
        at_precision(lambda x, li: x, precision, self.device)  # an unknown precision is refused before any reading

        def score(chunk: list[Prepared]) -> np.ndarray:
            return run(chunk, batch_size=batch_size, precision=precision)

        return scored_chunks(stream, score, on_error=on_error, where=src)

    def reconstruct(
        self,
        signal: Any,
        fs: float | None = None,
        leads: Sequence[str] | None = None,
        *,
        mask_ratio: float = 0.75,
        seed: int = 0,
    ) -> Reconstruction:
        """Mask ``mask_ratio`` of one record's patches and let the masked autoencoder fill them in.

        The record is cut into consecutive windows of the trained length, each masked at random
        (reproducibly from ``seed``) and encoded from its visible patches only. Needs the whole MAE:
        a pre-training run (its ``mae.safetensors``). For models trained with normalised targets
        (``norm_target``) the decoder predicts each patch's shape only; it is put back in mV with the
        TRUE mean and standard deviation of the original patch, so the level and scale of masked
        patches come from the data, not the model. With stored per-lead normalisation the output is
        likewise returned in mV.
        """
        if not 0.0 <= float(mask_ratio) < 1.0:
            raise DataError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        items, single = split_inputs(signal, fs, leads)
        if not single:
            raise DataError(f"reconstruct takes one record, got {len(items)}")
        name, x, rate, names = items[0]
        cfg = self.preprocessing
        prep = prepare_signal(x, rate, names, replace(cfg, "preprocess", normalise="none"), name=name)
        out = reconstruct_windows(
            self._load_mae(),
            prep,
            cfg.normalise,
            self.window,
            self._positions,
            float(mask_ratio),
            int(seed),
            self.device,
        )
        return Reconstruction(name=name, fs=self.fs, leads=self.leads, mask_ratio=float(mask_ratio), **out)

    @property
    def mae_file(self) -> Path:
        """The masked autoencoder :meth:`reconstruct` loads: ``mae.safetensors`` beside these weights."""
        return self.path.parent / "mae.safetensors"

    # ---------------------------------------------------------------------------------- internals
    def _load_mae(self) -> ECGMAE:
        if self._mae is not None:
            return self._mae
        file = self.mae_file
        if self.kind == "classifier" or not file.is_file():
            raise CheckpointError(
                f"{self.path}: reconstruct needs the whole masked autoencoder "
                f"({file.name} of a pre-training run, written by `ecgmae pretrain`); this "
                f"checkpoint holds {self.kind} weights only"
            )
        mae, header, _ = load_model(file, kind="mae")
        if header.model.encoder != self.encoder_config:
            raise CheckpointError(f"{file}: its encoder config differs from {self.path}'s; not the same run")
        self._mae = mae.to(self.device)  # type: ignore[assignment]
        return self._mae  # type: ignore[return-value]

    def _tokens(self) -> str:
        """The encoder's tokenisation; ``"cnn"`` for a reference CNN (absent leads are zero rows)."""
        return tokenization(self._net)

    @torch.inference_mode()
    def _per_record(
        self, items: Sequence[Prepared], fn: Forward, how: str, batch_size: int, precision: str = "fp32"
    ) -> np.ndarray:
        """Apply ``fn`` to every window of every record and pool the window outputs per record."""
        if not items:
            raise DataError("no records given")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
        tokens = self._tokens()
        warn_inputs(items, window=self.window, fs=self.fs, tokens=tokens, leads=self.leads, header=self.header)
        # one lead set per batch: a lead-tokenised model is given only the leads a record has
        batches = window_batches(
            items,
            self.window,
            self.stride,
            int(batch_size),
            group=lambda p: tuple(input_rows(p.present, tokens).tolist()),
        )
        li = torch.as_tensor(self._positions, dtype=torch.long, device=self.device)
        fn = at_precision(fn, precision, self.device)
        _, pooled = infer_records(fn, batches, lead_idx=li, tokens=tokens, how=how, device=self.device)
        return pooled
