"""Data layer: read raw ECG corpora, preprocess them once into a memory-mapped store, serve crops.

``io`` reads one record, ``signal`` preprocesses it, ``sources`` know each corpus, ``store`` builds and
reads prepared stores, ``splits`` holds patient-aware splits and the leakage check, and ``dataset`` (the
only module importing torch) serves training crops and evaluation windows. Nothing is imported here,
so ``import ecgmae.data.io`` stays light.
"""
