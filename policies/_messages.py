"""Decision messages in English and Chinese, one stable id per outcome.

The id is :attr:`Decision.code`; the same id reads the same in every language, so a
script or an auditor can match on it whatever language a person chose to read.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import Formatter

from policies._errors import PolicyError

LANGUAGES = ("en", "zh")

_MESSAGES: dict[str, dict[str, str]] = {
    "allowed": {
        "en": "allowed by {policies}",
        "zh": "已允许：依据策略 {policies}",
    },
    "forbidden": {
        "en": "denied by {policies}",
        "zh": "已拒绝：策略 {policies} 禁止此请求",
    },
    "no_permit": {
        "en": "denied: no policy permits {enterprise} to run {computation} on {dataset} "
        "for purpose {purpose}",
        "zh": "已拒绝：没有任何策略允许 {enterprise} 以用途 {purpose} 在数据集 {dataset} "
        "上运行 {computation}",
    },
    "no_policy_set": {
        "en": "denied: no policy set is applied",
        "zh": "已拒绝：尚未应用任何策略集",
    },
    "not_evaluated": {
        "en": "denied: the request could not be evaluated, failing closed: {error}",
        "zh": "已拒绝：无法评估该请求，按默认拒绝处理：{error}",
    },
    "licence_inactive": {
        "en": "denied: the licence of {enterprise} is {status}, not active",
        "zh": "已拒绝：{enterprise} 的许可证状态为 {status}，不是有效状态",
    },
    "columns_not_allowed": {
        "en": "denied: {policies} allow only the columns {allowed}; the job uses {columns}",
        "zh": "已拒绝：策略 {policies} 只允许使用列 {allowed}；该作业使用了 {columns}",
    },
    "licence_expired": {
        "en": "denied: the licence of {enterprise} expired at {expires}",
        "zh": "已拒绝：{enterprise} 的许可证已于 {expires} 过期",
    },
}

MESSAGE_IDS = tuple(sorted(_MESSAGES))


def message(code: str, details: Mapping[str, str], *, lang: str = "en") -> str:
    """The message ``code`` in ``lang``, filled from ``details``.

    Raises :class:`PolicyError` for an unknown id or language. A detail the message
    needs but ``details`` lacks reads ``?`` rather than failing.
    """
    if lang not in LANGUAGES:
        raise PolicyError(f"unknown language {lang!r} (known: {', '.join(LANGUAGES)})")
    try:
        template = _MESSAGES[code][lang]
    except KeyError:
        raise PolicyError(f"unknown message id {code!r}") from None
    names = {field for _, field, _, _ in Formatter().parse(template) if field}
    return template.format(**{name: details.get(name, "?") for name in names})


def placeholders(code: str, lang: str) -> frozenset[str]:
    """The detail names message ``code`` uses in ``lang`` (for tests of the catalogue)."""
    return frozenset(f for _, f, _, _ in Formatter().parse(_MESSAGES[code][lang]) if f)
