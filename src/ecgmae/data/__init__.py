"""Data layer: read raw ECG corpora, preprocess them once into a memory-mapped store, serve windows.

Bottom to top: ``record`` (the :class:`Record` type, lead names, the rules every reader applies),
``safety`` (file checks), ``formats`` (MATLAB, HDF5) and ``io`` (``read_record``, WFDB), ``signal``
(pure numpy preprocessing), ``sources`` (one module per corpus; ``sources.labels`` reads label tables,
``sources.reading`` reads items in worker processes), ``splits`` (patient-aware splits of plain arrays),
``store_reader`` (:class:`Store`) and ``store`` (``prepare_store``), ``leakage`` (store-aware split
checks), ``windows`` (the one definition of evaluation windows), ``prepared`` (a record in a model's
input space), ``corpus`` (stream a corpus or store through a transform) and ``dataset`` (the only
module importing torch: training crops and evaluation windows). Nothing is imported here, so
``import ecgmae.data.io`` stays light.
"""
