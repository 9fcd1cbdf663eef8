"""galaxy-da: simulation-to-survey domain adaptation for galaxy morphology.

The core trains and evaluates one trial in a plain process; Ray Tune, MLflow
and submitit are imported only by the modules that launch or track runs.
"""

__version__ = "0.1.0"
