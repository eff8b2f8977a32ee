"""The job's tasks, one module each (``TASK``, a :class:`jobs.task.Task` subclass); see jobs/task.py."""
