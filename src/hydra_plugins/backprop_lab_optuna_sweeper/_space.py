"""The search space: hydra.sweeper.params and the command line's sweeps, as Optuna distributions, checked
against the config; and each trial's values back as Hydra overrides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from backprop_lab.errors import one_line


class SearchError(ConfigCompositionException):
    """A search setting that cannot work; the message names it and the fix. (A ConfigCompositionException,
    so that the entry points report it as one line, as they do Hydra's own errors.)"""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@dataclass
class Space:
    """The distributions to search, and the overrides every trial gets as they are."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    texts: dict[str, dict[Any, str]] = field(default_factory=dict)  # per categorical key: choice -> override text
    fixed: dict[str, str] = field(default_factory=dict)  # key -> its override line

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """A trial's overrides: the fixed ones, then its values in Hydra's override syntax."""
        lines = [line for key, line in self.fixed.items() if key not in params]
        for key, value in params.items():
            text = self.texts.get(key, {}).get(value)
            lines.append(f"{key}={text if text is not None else Transformer.str(value)}")
        return lines


def flatten(params: Any, prefix: str = "") -> dict[str, str]:
    """hydra.sweeper.params as `key: sweep` lines. A command-line `hydra.sweeper.params.a.b='...'` arrives
    nested ({a: {b: ...}}) and replaces the config's `a.b` entry; one that replaced a whole entry `a` is an error."""
    flat: dict[str, str] = {}
    nested: dict[str, str] = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            nested.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else Transformer.str(value)
    return {**flat, **nested}


def distribution(override: Override) -> tuple[BaseDistribution, dict[Any, str]]:
    """The Optuna distribution of one sweep override, and the override text of each categorical choice.

    `a,b` or `choice(a,b)`: categorical; `range(1,10,2)`: ints (or floats) on that grid; `interval(lo,hi)`:
    uniform floats; tags: `log` (log scale), `int` (integers), as in `tag(log, int, interval(16, 512))`.
    """
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        raw = list(override.sweep_iterator())
        choices = [Transformer.encode(v) for v in raw]
        return CategoricalDistribution(choices), {c: Transformer.str(v) for c, v in zip(choices, raw)}
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError("the range is empty")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(min(values), max(values), step=abs(int(value.step))), {}
        return FloatDistribution(min(values), max(values), step=abs(float(value.step))), {}
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if "int" in value.tags:
            return IntDistribution(int(value.start), int(value.end), log=log_scale), {}
        return FloatDistribution(float(value.start), float(value.end), log=log_scale), {}
    raise ValueError(f"{override.value_type.name.lower()} is not a search space")


def search_space(lines: list[str], config: DictConfig, compose: Callable[[list[str]], DictConfig]) -> Space:
    """hydra.sweeper.params, then the command line's overrides (a later line for the same key wins): sweeps
    become distributions, plain values are fixed for every trial. Raises SearchError for an unknown key."""
    space = Space()
    for line in lines:
        try:
            override = OverridesParser.create().parse_override(line)
        except Exception as e:
            raise SearchError(f"cannot parse the search space entry {line!r}: {one_line(e)}") from e
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.texts.pop(key, None)
        space.fixed.pop(key, None)
        if not override.is_sweep_override():
            space.fixed[key] = override.input_line or line
            continue
        try:
            space.distributions[key], texts = distribution(override)
        except ValueError as e:
            raise SearchError(
                f"the search space entry {line!r} cannot be searched: {one_line(e)} (use choice(a,b), "
                "range(lo,hi,step), interval(lo,hi), tag(log, interval(lo,hi)) or tag(int, interval(lo,hi)))"
            ) from e
        if texts:
            space.texts[key] = texts
    check_keys(space, config, compose)
    return space


def has_key(config: DictConfig, name: str) -> bool:
    absent = object()
    return OmegaConf.select(config, name, default=absent, throw_on_resolution_failure=False) is not absent


def check_keys(space: Space, config: DictConfig, compose: Callable[[list[str]], DictConfig]) -> None:
    """Every searched key must be in the config, or a config group; a key under a group whose option the
    search picks (optimizer.momentum under optimizer=sgd,momentum) in at least one of those options. Keys
    added with `+` are not checked."""
    choices = config.hydra.runtime.choices
    groups = {k: d for k, d in space.distributions.items() if k in choices and isinstance(d, CategoricalDistribution)}
    for key in space.distributions:
        name = key.split("@")[0]
        if key.startswith(("+", "~")) or name in choices:
            continue
        if name == "hydra" or name.startswith("hydra."):
            raise SearchError(f"the search space entry {key} is Hydra's own setting, which a search cannot change")
        group = next((g for g in groups if name.startswith(f"{g}.")), None)
        if group is None and has_key(config, name):
            continue
        if group is not None:
            texts = space.texts.get(group, {})
            options = [texts.get(c, str(c)) for c in groups[group].choices]
            for option in options:
                try:
                    if has_key(compose([*space.fixed.values(), f"{group}={option}"]), name):
                        break
                except Exception:  # an option that does not compose fails its own trials
                    continue
            else:
                raise SearchError(
                    f"the search space entry {key} is a key of none of the options searched for {group} "
                    f"({', '.join(options)}): check its spelling, e.g. with `python train.py {group}={options[0]} "
                    f"--cfg job`, or write +{key} to add a new key"
                )
            continue
        raise SearchError(
            f"the search space entry {key} is not a key of the config (check its spelling, e.g. with "
            f"`python train.py --cfg job`; or write +{key} to add a new key)"
        )
