"""Retry policies: which failed background jobs run again, how often, and when.

A policy is given per function name pattern, as an option or in the config file::

    --retry 'report.*=5,backoff=exponential,min=10,max=3600,on=fail,exception'

The first policy whose glob matches a function's name applies to it; the scheduler
resolves it once per function (:meth:`RetryPolicies.resolve`) and keeps it on the
function's record, so a job that succeeds never looks at policies at all.

Attempts. ``ATTEMPTS`` counts runs, the first included: ``=5`` runs a job at most five
times. The count of runs that ended without a result is the job's ``retries`` (the
stored ``retries`` column, which gearmand's ``--job-retries`` counts too): a job that
ends an attempt in an outcome the policy covers is retried while ``retries`` stays
below ``ATTEMPTS`` after counting the attempt. Outcomes the policy does not cover keep
today's behaviour: WORK_FAIL and WORK_EXCEPTION end the job; a lost worker or an expired
CAN_DO_TIMEOUT requeue it at once, bounded by ``--job-retries``.

Delays. ``fixed`` waits ``min`` seconds before every retry. ``exponential`` waits about
``min * 2**(n-1)`` before retry ``n``, capped at ``max``, with jitter: the delay is
drawn uniformly from the upper half of that value, and never below ``min``, so many
jobs that failed together (a database restart) do not come back in lockstep.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TypeVar

_N = TypeVar("_N", int, float)

#: Default first delay (seconds): long enough for a restarted dependency to come back.
DEFAULT_MIN_DELAY = 5.0
#: Default ceiling of the exponential delay (seconds): a job retried for a day is
#: still tried at least hourly.
DEFAULT_MAX_DELAY = 3600.0
#: The largest ATTEMPTS accepted: the stored retry count is a 32-bit integer.
MAX_ATTEMPTS = 2**31 - 1
#: The largest delay accepted (seconds): ten years, far inside the 64-bit run-at time.
MAX_DELAY = 10 * 365 * 86400.0


class Outcome(enum.IntFlag):
    """How an attempt ended without a result; a policy retries a set of them."""

    FAIL = 1  # the worker sent WORK_FAIL
    EXCEPTION = 2  # the worker sent WORK_EXCEPTION
    LOST = 4  # the worker disconnected or dropped the function while running it
    TIMEOUT = 8  # the worker's CAN_DO_TIMEOUT expired


#: Outcome names as ``on=`` spells them.
OUTCOME_NAMES = {
    "fail": Outcome.FAIL,
    "exception": Outcome.EXCEPTION,
    "lost": Outcome.LOST,
    "timeout": Outcome.TIMEOUT,
}
#: What a policy retries when ``on=`` is not given: the failures a worker reports.
#: Lost workers and timeouts are already requeued at once without a policy.
DEFAULT_OUTCOMES = Outcome.FAIL | Outcome.EXCEPTION


class Backoff(enum.Enum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"


class PolicyError(ValueError):
    """A retry policy that cannot be parsed; the message says what and where."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the jobs of the functions matching ``pattern`` are retried.

    Attributes:
        pattern: shell-style glob over the function name (``*``, ``?``, ``[...]``).
        attempts: most runs of one job, the first included (1 = never retried).
        backoff: fixed or exponential delays.
        min_delay: first delay, and the floor of every delay (seconds).
        max_delay: ceiling of the exponential delay (seconds).
        outcomes: the ways an attempt may end that are retried.
        foreground: also retry foreground jobs, as long as nothing of the job (WORK_DATA,
            WORK_WARNING, WORK_STATUS) has reached a waiting client yet and attempts
            remain; the last attempt's failure goes to the clients as usual.
    """

    pattern: str
    attempts: int
    backoff: Backoff = Backoff.EXPONENTIAL
    min_delay: float = DEFAULT_MIN_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    outcomes: Outcome = DEFAULT_OUTCOMES
    foreground: bool = False

    def delay(self, retry: int, randomness: float) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first).

        Args:
            retry: how many attempts have ended so far without a result (>= 1).
            randomness: a number in [0, 1), e.g. ``random.random()``; only the
                exponential backoff uses it.
        """
        if self.backoff is Backoff.FIXED:
            return self.min_delay
        base = min(self.max_delay, self.min_delay * 2.0 ** min(retry - 1, 62))
        return max(self.min_delay, base / 2 + randomness * base / 2)

    def spec(self) -> str:
        """The policy in ``--retry`` syntax (what the admin commands show)."""
        on = ",".join(name for name, flag in OUTCOME_NAMES.items() if flag in self.outcomes)
        return (
            f"{self.pattern}={self.attempts},backoff={self.backoff.value},"
            f"min={self.min_delay:g},max={self.max_delay:g},on={on}"
            + (",foreground=yes" if self.foreground else "")
        )


class RetryPolicies:
    """Policies in the order given; the first match wins."""

    def __init__(self, policies: Iterable[RetryPolicy] = ()) -> None:
        self.policies = list(policies)
        self._patterns = [p.pattern.encode("latin-1") for p in self.policies]

    def __bool__(self) -> bool:
        return bool(self.policies)

    def resolve(self, function: bytes) -> RetryPolicy | None:
        """The policy for the function named ``function``, or None."""
        for pattern, policy in zip(self._patterns, self.policies, strict=True):
            if fnmatchcase(function, pattern):
                return policy
        return None


#: The options a policy takes after GLOB=ATTEMPTS.
_OPTIONS = ("backoff", "min", "max", "on", "foreground")
_YES = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


def parse_policy(text: str) -> RetryPolicy:
    """Parse ``GLOB=ATTEMPTS[,backoff=…][,min=S][,max=S][,on=OUTCOME…][,foreground=yes]``.

    ``on`` takes several outcomes separated by commas or ``+``
    (``on=fail,exception,lost`` and ``on=fail+lost`` are the same thing).

    Raises:
        PolicyError: the text is malformed or a value is out of range.
    """
    pattern, sep, rest = text.partition("=")
    pattern = pattern.strip()
    if not sep or not pattern:
        raise PolicyError(f"retry policy {text!r}: expected GLOB=ATTEMPTS[,option=value...]")
    fields = [part.strip() for part in rest.split(",")]
    options: dict[str, str] = {}
    last = ""
    for part in fields[1:]:
        key, sep, value = part.partition("=")
        if not sep and last == "on":  # on=fail,exception: the list goes on
            options["on"] += "+" + part
            continue
        last = key.strip().lower()
        if not sep or last not in _OPTIONS:
            raise PolicyError(
                f"retry policy {text!r}: unknown option {part!r}"
                " (use backoff=, min=, max=, on=, foreground=)"
            )
        if last in options:
            raise PolicyError(f"retry policy {text!r}: {last}= given twice")
        options[last] = value.strip()
    try:
        return policy_from(pattern, fields[0], options)
    except PolicyError as exc:
        raise PolicyError(f"retry policy {text!r}: {exc}") from None


def policy_from(pattern: str, attempts: object, options: Mapping[str, object]) -> RetryPolicy:
    """A validated policy from its parts (``options``: backoff, min, max, on, foreground).

    Raises:
        PolicyError: a value is malformed or out of range.
    """
    try:
        pattern.encode("latin-1")
    except UnicodeEncodeError:
        raise PolicyError(f"pattern {pattern!r}: function names are bytes; use latin-1") from None
    count = _number(attempts, "ATTEMPTS", int)
    if not 1 <= count <= MAX_ATTEMPTS:
        raise PolicyError(f"ATTEMPTS must be between 1 and {MAX_ATTEMPTS}, not {count}")
    backoff_name = str(options.get("backoff", Backoff.EXPONENTIAL.value)).lower()
    try:
        backoff = Backoff(backoff_name)
    except ValueError:
        raise PolicyError(f"backoff must be fixed or exponential, not {backoff_name!r}") from None
    low = _number(options.get("min", DEFAULT_MIN_DELAY), "min", float)
    high = _number(options.get("max", max(low, DEFAULT_MAX_DELAY)), "max", float)
    if not 0 <= low <= MAX_DELAY or not 0 <= high <= MAX_DELAY:
        raise PolicyError(f"min and max must be between 0 and {MAX_DELAY:g} seconds")
    if high < low:
        raise PolicyError(f"max ({high:g}) is below min ({low:g})")
    outcomes = _outcomes(options.get("on"))
    foreground = _YES.get(str(options.get("foreground", "no")).lower())
    if foreground is None:
        raise PolicyError(f"foreground must be yes or no, not {options['foreground']!r}")
    return RetryPolicy(pattern, count, backoff, low, high, outcomes, foreground)


def policy_text(pattern: str, value: object) -> str:
    """One ``[retry]`` entry of the config file as a ``--retry`` string.

    ``value`` is ``"ATTEMPTS[,option=value...]"``, a number of attempts, or a table
    with ``attempts`` and any of ``backoff``, ``min``, ``max`` and ``on`` (a string
    or a list of outcome names).

    Raises:
        PolicyError: the entry is malformed.
    """
    if isinstance(value, bool):
        raise PolicyError(f"{pattern!r}: expected attempts or a table, not {value!r}")
    if isinstance(value, int | str):
        text = f"{pattern}={value}"
    elif isinstance(value, dict):
        extra = set(value) - {"attempts", *_OPTIONS}
        if "attempts" not in value or extra:
            raise PolicyError(
                f"{pattern!r}: a table needs attempts and may have {', '.join(_OPTIONS)}"
            )
        parts = [f"{pattern}={value['attempts']}"]
        for key in _OPTIONS:
            if key in value:
                item = value[key]
                if isinstance(item, bool):  # foreground = true in TOML
                    item = "yes" if item else "no"
                shown = "+".join(map(str, item)) if isinstance(item, list) else item
                parts.append(f"{key}={shown}")
        text = ",".join(parts)
    else:
        raise PolicyError(f"{pattern!r}: expected attempts or a table, not {value!r}")
    parse_policy(text)  # reports errors against the file's entry
    return text


def parse_policies(texts: Iterable[str]) -> RetryPolicies:
    """Every ``--retry`` value, in order.

    Raises:
        PolicyError: one of them cannot be parsed.
    """
    return RetryPolicies(parse_policy(text) for text in texts)


def _number(value: object, name: str, kind: Callable[[str], _N]) -> _N:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PolicyError(f"{name} must be a number, not {value!r}")
    try:
        number = kind(str(value).strip())
    except ValueError:
        raise PolicyError(f"{name} must be a number, not {value!r}") from None
    if number != number:  # NaN
        raise PolicyError(f"{name} must be a number, not {value!r}")
    return number


def _outcomes(value: object) -> Outcome:
    if value is None:
        return DEFAULT_OUTCOMES
    names = value if isinstance(value, list) else str(value).replace("+", ",").split(",")
    outcomes = Outcome(0)
    for name in names:
        flag = OUTCOME_NAMES.get(str(name).strip().lower())
        if flag is None:
            raise PolicyError(f"unknown outcome {name!r} in on= (use {', '.join(OUTCOME_NAMES)})")
        outcomes |= flag
    if not outcomes:
        raise PolicyError("on= names no outcome")
    return outcomes
