"""Unlabelled realistic 12-lead ECGs from the ``deepfake-ecg`` GAN (Pulse2Pulse, MIT licence).

The optional package ``deepfake-ecg`` (``pip install 'ecgmae[deepfake]'``) ships a generator trained on
real 10 s, 500 Hz, 8-lead ECGs (I, II, V1-V6). It maps uniform noise (8, 5000) in [-1, 1] to a tanh
output that times 6000 is microvolts. The other limb leads are derived from I and II in float32
(III = II - I, aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2), so the Einthoven and
Goldberger identities hold to float32 rounding. The records carry no labels: a pre-training corpus.

Record ``i`` of seed ``s`` is made from noise drawn by its own ``torch.Generator`` seeded with
``np.random.SeedSequence([s, i])``. The generator runs on aligned blocks of ``batch_size`` records
(record i sits in block ``i // batch_size``), so a record's values do not depend on how many records
were asked for or where the run started. They do depend, by float rounding only (~1e-5 mV), on
``batch_size`` (the CPU kernels are picked by batch size) and on the torch build and machine.

Nothing is imported or loaded until a function is called; the weights are read only with
``torch.load(..., weights_only=True)`` (tensors and plain containers, never arbitrary objects).

Example:
    >>> recs = list(generate(3, seed=0, batch_size=8))
    >>> recs[0].record, recs[0].signal.shape      # ('deepfake00000', (12, 5000)) float32 mV
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecgmae.config import ConfigError
from ecgmae.errors import CheckpointError, ECGMAEError
from ecgmae.utils import log

if TYPE_CHECKING:  # annotations only: importing this module loads neither
    import numpy as np
    import torch

__all__ = [
    "BASE_LEADS",
    "FS",
    "LEADS",
    "SECONDS",
    "DeepfakeRecord",
    "gan_resampling",
    "generate",
    "generate_record",
    "load_generator",
    "package_version",
    "twelve_leads",
    "weights_path",
    "write_wfdb_folder",
]

PACKAGE = "deepfakeecg"  # import name
DISTRIBUTION = "deepfake-ecg"  # PyPI name
INSTALL_HINT = "pip install 'ecgmae[deepfake]'"
FS = 500.0  # the generator's native rate (Hz)
SECONDS = 10.0
N_NATIVE = 5000
TO_MV = 6.0  # tanh output * 6000 = uV, so * 6 = mV
ADC_GAIN = 1000.0  # digital units per mV in the WFDB files: 1 uV steps
BASE_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
DEFAULT_BATCH = 50


@dataclasses.dataclass(frozen=True, eq=False)
class DeepfakeRecord:
    """One generated record.

    Attributes:
        record: record name, ``deepfake00042``.
        signal: float32 (12, 10 * fs) in mV, leads in ``LEADS`` order.
        fs: sampling rate in Hz.
        leads: ``LEADS``.
        seed: the set's seed.
        index: the record number.
    """

    record: str
    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    seed: int
    index: int


def weights_path() -> Path:
    """The generator checkpoint inside the installed ``deepfake-ecg`` package (nothing is imported).

    Raises:
        ECGMAEError: when the package is not installed or lacks its checkpoint.
    """
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):  # a broken install or a stub in sys.modules
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ECGMAEError(f"the deepfake engine needs the optional package {DISTRIBUTION}: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "checkpoints" / "g_stat.pt"
    if not path.is_file():
        raise ECGMAEError(f"{path}: the {DISTRIBUTION} checkpoint is missing; reinstall it: {INSTALL_HINT}")
    return path


def package_version() -> str:
    """The installed ``deepfake-ecg`` version, or "unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def _read_state_dict(path: Path) -> dict[str, Any]:
    """The generator's tensors from ``path``, loaded with ``weights_only=True`` (no arbitrary objects)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for a refused object; others for a corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused to load the generator: not a plain tensor checkpoint (torch.load weights_only: {first})"
        ) from None
    state = ckpt.get("stat_dict") if isinstance(ckpt, dict) else None
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise CheckpointError(f"{path}: expected a dict with the generator's tensors under 'stat_dict'")
    return state


@functools.lru_cache(maxsize=2)
def _load(path: str) -> Any:
    import warnings

    import torch

    state = _read_state_dict(Path(path))  # before importing the package's code
    try:
        from deepfakeecg.models.pulse2pulse import Pulse2pulseGenerator
    except ImportError as exc:
        raise ECGMAEError(f"cannot import {PACKAGE} ({exc}); {INSTALL_HINT}") from None
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its constructor calls the deprecated nn.init.kaiming_normal
        model = Pulse2pulseGenerator()  # random init (then overwritten) must not move the global RNG
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not fit the Pulse2Pulse generator ({str(exc).splitlines()[0]})") from None
    return model.eval().requires_grad_(False)


def load_generator() -> torch.nn.Module:
    """The pre-trained Pulse2Pulse generator on the CPU in eval mode (loaded once, then cached).

    Raises:
        ECGMAEError: when ``deepfake-ecg`` is not installed. CheckpointError: when its checkpoint
            holds anything but tensors (refused unread) or does not fit the model.
    """
    return _load(str(weights_path()))


def record_noise(seed: int, index: int) -> torch.Tensor:
    """The generator input of record ``index``: float32 (8, 5000) uniform in [-1, 1], from (seed, index)."""
    import numpy as np
    import torch

    key = int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])
    return torch.empty(8, N_NATIVE).uniform_(-1.0, 1.0, generator=torch.Generator().manual_seed(key))


def twelve_leads(base: np.ndarray) -> np.ndarray:
    """(..., 8, T) leads I, II, V1-V6 -> float32 (..., 12, T) in ``LEADS`` order (limb leads derived)."""
    import numpy as np

    x = np.asarray(base, dtype=np.float32)
    if x.ndim < 2 or x.shape[-2] != len(BASE_LEADS):
        raise ValueError(f"expected (..., 8, T) leads {','.join(BASE_LEADS)}, got shape {x.shape}")
    i, ii, half = x[..., 0, :], x[..., 1, :], np.float32(0.5)
    limb = [i, ii, ii - i, -(i + ii) * half, i - ii * half, ii - i * half]
    return np.concatenate([np.stack(limb, axis=-2), x[..., 2:, :]], axis=-2)


def gan_resampling(fs: float) -> tuple[int, int]:
    """(up, down) that take 500 Hz to ``fs`` with ``scipy.signal.resample_poly``.

    Raises:
        ConfigError: when fs is outside 50-2000 Hz or 10 s at fs is not a whole number of samples.
    """
    if not (math.isfinite(fs) and 50.0 <= fs <= 2000.0):
        raise ConfigError(f"synth --engine deepfake: fs {fs} Hz is outside 50-2000 Hz (native rate 500 Hz)")
    ratio = Fraction(fs).limit_denominator(1000) / Fraction(int(FS))
    if abs(float(ratio) * FS - fs) > 1e-9 or (N_NATIVE * ratio).denominator != 1:
        raise ConfigError(
            f"synth --engine deepfake: fs {fs} Hz does not give a whole number of samples "
            f"in {SECONDS:g} s; use e.g. 100, 250 or 500"
        )
    return ratio.numerator, ratio.denominator


def _check(n: int, seed: int, start: int, batch_size: int, fs: float) -> tuple[int, int]:
    if n < 1 or seed < 0 or start < 0 or batch_size < 1:
        raise ConfigError(
            f"synth --engine deepfake: need n >= 1 ({n}), seed >= 0 ({seed}), start >= 0 "
            f"({start}) and batch size >= 1 ({batch_size})"
        )
    return gan_resampling(fs)


def _block(model: Any, seed: int, block: int, batch_size: int, up: int, down: int) -> Any:
    """Records ``block * batch_size ...`` of the block as float32 (batch_size, 12, T) in mV."""
    import numpy as np
    import torch

    lo = block * batch_size
    noise = torch.stack([record_noise(seed, lo + k) for k in range(batch_size)])
    with torch.inference_mode():
        base = (model(noise) * TO_MV).numpy()  # (B, 8, 5000) mV
    if (up, down) != (1, 1):
        from scipy.signal import resample_poly

        base = resample_poly(base.astype(np.float64), up, down, axis=-1)
    return twelve_leads(base)


def generate(
    n: int, seed: int = 0, *, fs: float = FS, start: int = 0, batch_size: int = DEFAULT_BATCH
) -> Iterator[DeepfakeRecord]:
    """Records ``start .. start + n - 1`` of set ``seed``, one at a time, computed block by block.

    Args:
        n: number of records (>= 1).
        seed: the set's seed (>= 0).
        fs: output rate; 500 Hz is native, others are resampled with ``scipy.signal.resample_poly``.
        start: first record number.
        batch_size: records per generator call (memory ~1.5 MB each); changes values by float rounding only.

    Raises:
        ConfigError: on bad arguments (checked at once). ECGMAEError, CheckpointError: see
            :func:`load_generator` (on the first record).
    """
    up, down = _check(n, seed, start, batch_size, fs)

    def records() -> Iterator[DeepfakeRecord]:
        model = load_generator()
        end = start + n
        for block in range(start // batch_size, (end - 1) // batch_size + 1):
            sig = _block(model, seed, block, batch_size, up, down)
            for k in range(sig.shape[0]):
                i = block * batch_size + k
                if start <= i < end:
                    yield DeepfakeRecord(f"deepfake{i:05d}", sig[k].copy(), float(fs), LEADS, seed, i)

    return records()


def generate_record(seed: int, index: int, *, fs: float = FS, batch_size: int = DEFAULT_BATCH) -> DeepfakeRecord:
    """Record ``index`` of set ``seed`` (computes its whole block of ``batch_size`` records)."""
    return next(generate(1, seed, fs=fs, start=index, batch_size=batch_size))


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_wfdb_folder(
    out: Path | str,
    n: int,
    *,
    fs: float = FS,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH,
    quiet: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write records 0..n-1 as WFDB (.hea + .dat, format 16, 1 uV) plus RECORDS and source.json.

    No labels.csv: the records are unlabelled (``ecgmae prepare --source folder`` reads them as such).
    The folder is built beside ``out`` under a hidden name and renamed onto it only when complete.

    Args:
        out: target folder; absent or empty unless ``overwrite`` (which replaces only a folder an
            earlier ``ecgmae synth`` wrote).
        n: number of records.
        fs, seed, batch_size: as in :func:`generate`.
        quiet: no progress bar.
        overwrite: replace an existing ``ecgmae synth`` folder.

    Returns:
        ``out``.

    Raises:
        ConfigError: on bad arguments. ECGMAEError: when ``deepfake-ecg`` is missing or ``out``
            cannot be (re)placed. CheckpointError: on an unsafe or unfit checkpoint.
    """
    from ecgmae._version import __version__
    from ecgmae.data.wfdb_write import staged_folder, write_wfdb16
    from ecgmae.utils import progress, write_json_atomic

    _check(n, seed, 0, batch_size, fs)
    path = weights_path()  # a missing package fails before anything is written
    load_generator()
    version = package_version()
    out = Path(out)
    with staged_folder(out, overwrite=overwrite) as tmp:
        names = []
        for rec in progress(
            generate(n, seed, fs=fs, batch_size=batch_size), quiet=quiet, total=n, desc="synth deepfake", unit="rec"
        ):
            comments = [
                "unlabelled: synthetic ECG from a GAN, no diagnosis",
                f"patient: deepfake-s{seed}-p{rec.index:05d}",
                f"generator: {DISTRIBUTION} {version} (Pulse2Pulse GAN) via ecgmae {__version__} seed={seed} "
                f"index={rec.index} batch_size={batch_size}",
                "derived: III=II-I aVR=-(I+II)/2 aVL=I-II/2 aVF=II-I/2",
            ]
            write_wfdb16(tmp / rec.record, rec.signal, rec.fs, rec.leads, comments, adc_gain=ADC_GAIN)
            names.append(rec.record)
        (tmp / "RECORDS").write_text("".join(f"{r}\n" for r in names))
        write_json_atomic(
            tmp / "source.json",
            {
                "engine": "deepfake",
                "package": DISTRIBUTION,
                "package_version": version,
                "licence": "MIT",
                "weights": path.name,
                "weights_sha256": _sha256(path),
                "ecgmae_version": __version__,
                "seed": seed,
                "n": n,
                "fs": float(fs),
                "seconds": SECONDS,
                "native_fs": FS,
                "batch_size": batch_size,
                "leads": list(LEADS),
                "units": "mV",
                "adc_gain": ADC_GAIN,
                "labels": None,
            },
        )
    log.info("wrote %d unlabelled %s records to %s", n, DISTRIBUTION, out)
    return out
