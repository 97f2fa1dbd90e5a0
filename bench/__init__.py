"""ablation-bench: textbook deep-learning claims answered with experiments on CIFAR-10.

Rooms: data/ (CIFAR-10 sources, cache, splits, normalisations, augmentation), engine/ (one training loop,
its tasks, models and components), study/ (study files, scheduling, execution, MLflow tracking) and perf/
(speed measurement). config.py (a trial's configuration), claims.py and registry.py are leaves every room
may import; cli.py is the `bench` command. Doors point one way: study -> engine -> data -> config; nothing
here imports the report at module level.
"""

import time as _time

STARTED = _time.time()  # when this process began (before torch loads): `bench study --time-budget` counts from here
