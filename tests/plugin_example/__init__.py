"""An example job-type plug-in, as a separate package would ship it.

A real plug-in declares its job types in its own ``pyproject.toml``::

    [project.entry-points."candlekeep.jobs"]
    example_echo = "candlekeep_example.jobs:echo"
    example_countdown = "candlekeep_example.jobs:COUNTDOWN"

``tests/jobs/test_registry.py`` writes the same declaration as installed metadata
(``entry_points.txt`` in a ``.dist-info`` folder) instead of installing this package.
``broken`` holds the mistakes the registry must report.
"""
