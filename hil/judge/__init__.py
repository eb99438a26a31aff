"""The judge: the tests a scenario lists, and the verdict on a run's recording.

`TestSpec` is one test of a scenario's `tests:` (a pydantic union told apart by `kind`),
`TestSpecs` the list with unique names, `judge(recording, tests)` the results.
"""

from hil.judge.run import judge
from hil.judge.specs import TestSpec, TestSpecs

__all__ = ["TestSpec", "TestSpecs", "judge"]
