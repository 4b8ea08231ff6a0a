"""How the call benchmarks compare an argument a model wrote with an expected one: the one
copy `calls/run.py` and `bfcl/run.py` share. Strings lose case, spaces and punctuation
(`New York, NY` = `new york ny`, `x**2` = `x^2`), numbers compare as floats rounded to six
decimals (`5` = `5.0`), lists and objects element by element; booleans stay booleans (so
`true` never equals `1`).
"""

import re


def norm(value):
    if isinstance(value, str):
        return re.sub(r"[\s,./\-_*^'\"]", "", value).lower()
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return round(float(value), 6)
    if isinstance(value, (list, tuple)):
        return [norm(v) for v in value]
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    return value
