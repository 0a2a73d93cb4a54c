"""The course hub: JupyterHub for a cohort of the course, with nbgrader's exchange (see hub/README.md).

:mod:`coursehub.cli` (the ``hub/course-hub`` command), :mod:`coursehub.settings` and :mod:`coursehub.cgroups`
need only the standard library; :mod:`coursehub.spawner`, :mod:`coursehub.exchange` and
``jupyterhub_config.py`` run inside the course environment, next to JupyterHub and nbgrader.
"""
