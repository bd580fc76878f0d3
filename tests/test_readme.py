"""The README's Python examples run as written."""

import math
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


# Example 1 (the descriptor's: the texture preset's full-size learning step)
# is a slow check.
@pytest.mark.parametrize("index", [pytest.param(i, marks=pytest.mark.slow) if i == 1 else i
                                   for i in range(len(BLOCKS))])
def test_readme_example_runs(index):
    namespace = {}
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), namespace)
    if "info" in namespace:  # the sampler example: N(0, I) moments
        x = namespace["x"]
        assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    if "metrics" in namespace:  # the descriptor example: one finite learning step
        assert all(math.isfinite(float(v)) for v in namespace["metrics"].values())
