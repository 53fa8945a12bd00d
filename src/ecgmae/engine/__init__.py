"""Training engine: Lightning modules, the Trainer factory and the run orchestration.

This package is the only place that imports Lightning. ``engine.config`` has the typed run configs.
"""
