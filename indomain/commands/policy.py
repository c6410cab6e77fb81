"""Policy author commands: validate (with lint), test, check --explain, diff, apply."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from indomain.commands.common import (
    EXIT_DENIED,
    EXIT_FAILED,
    EXIT_USAGE,
    HomeOpt,
    console,
    err,
    errors,
    open_sandbox,
)

policy_app = typer.Typer(
    help="Policy author: validate, test, explain, diff and apply Cedar policies.",
    no_args_is_help=True,
)

DirArg = Annotated[Path, typer.Argument(help="Policy folder")]
LangOpt = Annotated[str, typer.Option("--lang", help="Message language: en or zh")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output")]

_TEXT = {
    "valid": {"en": "valid: {n} policies, version {v}", "zh": "有效：{n} 条策略，版本 {v}"},
    "lint": {"en": "warning", "zh": "警告"},
    "strict": {
        "en": "refused: {n} lint findings (--strict)",
        "zh": "已拒绝：{n} 条检查警告（--strict）",
    },
    "pass": {"en": "pass", "zh": "通过"},
    "fail": {"en": "FAIL", "zh": "失败"},
    "summary": {"en": "{p} passed, {f} failed", "zh": "{p} 个通过，{f} 个失败"},
    "failed_cond": {"en": "failed condition", "zh": "未满足的条件"},
    "applied": {
        "en": "applied policy version {v} (ledger entry {i})",
        "zh": "已应用策略版本 {v}（账本条目 {i}）",
    },
}


def _t(key: str, lang: str, **values: object) -> str:
    return _TEXT[key].get(lang, _TEXT[key]["en"]).format(**values)


def _check_lang(lang: str) -> None:
    import policies

    with errors():
        policies.message("allowed", {}, lang=lang)  # raises for an unknown language


@policy_app.command("validate")
def policy_validate(
    directory: DirArg,
    strict: Annotated[bool, typer.Option(help="Treat lint findings as errors")] = False,
    lang: LangOpt = "en",
) -> None:
    """Check a policy folder: schema, @id, annotations (every problem printed), then lint:
    unreachable permits, permits without a purpose condition, grants without expiry."""
    import policies

    _check_lang(lang)
    with errors():
        policy_set = policies.PolicySet.load(directory)
        findings = policies.lint(policy_set)
        for finding in findings:
            err.print(f"[yellow]{_t('lint', lang)}:[/] {finding}", highlight=False)
        if strict and findings:
            err.print(_t("strict", lang, n=len(findings)))
            raise typer.Exit(EXIT_USAGE)
        console.print(_t("valid", lang, n=len(policy_set.policy_ids), v=policy_set.version))


@policy_app.command("test")
def policy_test(
    directory: DirArg,
    cases: Annotated[
        list[Path] | None,
        typer.Option("--cases", help="YAML case files [default: DIR/tests/*.yaml]"),
    ] = None,
    lang: LangOpt = "en",
) -> None:
    """Run the author's YAML cases (request -> expected decision and obligations)."""
    import yaml

    import policies

    _check_lang(lang)
    with errors():
        policy_set = policies.PolicySet.load(directory)
        files = cases or sorted((directory / "tests").glob("*.yaml"))
        if not files:
            raise policies.PolicyError(f"no test cases: expected YAML files in {directory}/tests")
        passed = failed = 0
        for file in files:
            try:
                document = yaml.safe_load(file.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise policies.PolicyError(f"{file}: cannot read cases: {exc}") from None
            for result in policies.run_cases(policy_set, document):
                mark = _t("pass", lang) if result.passed else f"[red]{_t('fail', lang)}[/]"
                console.print(f"{mark}  {result.name}", highlight=False)
                for problem in result.problems:
                    console.print(f"      {problem}", highlight=False)
                passed += result.passed
                failed += not result.passed
        console.print(_t("summary", lang, p=passed, f=failed))
        if failed:
            raise typer.Exit(EXIT_FAILED)


@policy_app.command("check")
def policy_check(
    enterprise: Annotated[str, typer.Option(help="Enterprise (principal)")],
    dataset: Annotated[str, typer.Option(help="Dataset (resource)")],
    purpose: Annotated[str, typer.Option(help="Declared purpose")],
    computation: Annotated[str, typer.Option(help="Computation (action)")] = "aggregate",
    policies_dir: Annotated[
        Path | None,
        typer.Option("--policies", help="Policy folder [default: the home's applied policies]"),
    ] = None,
    at: Annotated[str | None, typer.Option("--at", help="Decision time [default: now]")] = None,
    epsilon: Annotated[str | None, typer.Option(help="Epsilon the job asks for")] = None,
    column: Annotated[
        list[str] | None, typer.Option("--column", help="A column the job uses (repeat)")
    ] = None,
    result_size: Annotated[
        int | None, typer.Option(min=0, help="Most rows the result can have [default: unknown]")
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Show which conditions failed")
    ] = False,
    home: HomeOpt = None,
    lang: LangOpt = "en",
    as_json: JsonOpt = False,
) -> None:
    """Dry run of one job: decision, determining policies, merged obligations and, with
    --explain, every condition of the policies in scope. Licence and dataset facts come
    from the home's registry. Exits 3 for a denial."""
    from decimal import Decimal, InvalidOperation

    import policies
    from indomain.policy_requests import registry_request
    from indomain.registry import parse_expiry

    _check_lang(lang)
    with errors(), open_sandbox(home) as sandbox:
        policy_set = policies.PolicySet.load(policies_dir) if policies_dir else sandbox.policy_set
        when = parse_expiry(at) if at else datetime.now(UTC)
        try:
            eps = Decimal(epsilon) if epsilon is not None else None
        except InvalidOperation:
            raise policies.PolicyError("--epsilon must be a number") from None
        request = registry_request(
            sandbox.registry,
            enterprise=enterprise,
            computation=computation,
            dataset=dataset,
            purpose=purpose,
            when=when,
            epsilon=eps,
            columns=tuple(column or ()),
            result_size=result_size,
        )
        if policy_set is None:
            explanation = None
            decision = policies.decide(None, request)
        else:
            explanation = policies.explain(policy_set, request)
            decision = explanation.decision
        _print_decision(decision, explanation if explain else None, lang=lang, as_json=as_json)
        if not decision.allowed:
            raise typer.Exit(EXIT_DENIED)


def _print_decision(decision: Any, explanation: Any, *, lang: str, as_json: bool) -> None:
    import policies

    text = policies.message(decision.code, decision.details, lang=lang)
    if as_json:
        body = explanation.to_json() if explanation is not None else {}
        body.update(
            {
                "allowed": decision.allowed,
                "code": decision.code,
                "message": text,
                "determining_policies": list(decision.determining_policies),
                "obligations": dict(decision.obligations),
                "policy_version": decision.policy_version,
            }
        )
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return
    colour = "green" if decision.allowed else "red"
    console.print(f"[{colour}]{decision.code}[/]: {text}", highlight=False)
    console.print(f"policy version {decision.policy_version or '-'}", highlight=False)
    for name, value in sorted(decision.obligations.items()):
        console.print(f"obligation {name} = {value}", highlight=False)
    if explanation is None:
        return
    for grant, state in sorted(explanation.grants.items()):
        console.print(f"grant {grant}: {state}", highlight=False)
    for check in explanation.matched:
        mark = "✓" if check.satisfied else "✗"
        console.print(f"{mark} {check.effect} {check.policy}", highlight=False)
        for cond in check.conditions:
            state = {True: "true", False: "false", None: "error"}[cond.holds]
            label = f"  {_t('failed_cond', lang)}: " if cond.holds is not True else "  ok: "
            console.print(f"{label}{cond.text} ({state})", highlight=False)


@policy_app.command("diff")
def policy_diff(
    old: Annotated[Path, typer.Argument(help="Current policy folder")],
    new: Annotated[Path, typer.Argument(help="Proposed policy folder")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Which past decisions on the ledger the NEW folder would change, and which policies
    were added, removed or changed."""
    import policies
    from indomain.policy_diff import policy_changes, replay

    with errors(), open_sandbox(home) as sandbox:
        before = policies.PolicySet.load(old)
        after = policies.PolicySet.load(new)
        replayed, changed = replay(sandbox, before, after)
        changes = policy_changes(before, after)
        if as_json:
            body = {**changes, "replayed": replayed, "changed": [c.to_json() for c in changed]}
            print(json.dumps(body, indent=2, ensure_ascii=False))
            return
        for kind in ("added", "removed", "changed"):
            for pid in changes[kind]:
                console.print(f"{kind:8} {pid}", highlight=False)
        for c in changed:
            console.print(
                f"entry {c.ledger_index}: {c.enterprise} {c.computation} {c.dataset} "
                f"({c.purpose}): {c.old} -> {c.new}",
                highlight=False,
            )
        console.print(f"{len(changed)} of {replayed} past decisions would change")


@policy_app.command("apply")
def policy_apply(
    directory: DirArg,
    author: Annotated[
        str | None, typer.Option(help="Who applies it [default: your login name]")
    ] = None,
    home: HomeOpt = None,
    lang: LangOpt = "en",
) -> None:
    """Validate and install a policy folder; its version, author and a diff summary are
    appended to the ledger. An invalid folder is never applied."""
    _check_lang(lang)
    with errors(), open_sandbox(home) as sandbox:
        who = author if author is not None else _login_name()
        policy_set, index = sandbox.apply_policies(directory, author=who)
        console.print(_t("applied", lang, v=policy_set.version, i=index))


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


# grants ------------------------------------------------------------------------------

grant_app = typer.Typer(
    help="Data bureau: issue, list and revoke grants (Grant entities for policies).",
    no_args_is_help=True,
)
policy_app.add_typer(grant_app, name="grant")


@grant_app.command("issue")
def grant_issue(
    grant_id: Annotated[str, typer.Argument(help="Grant id, e.g. G-2026-014")],
    enterprise: Annotated[str, typer.Option(help="The registered enterprise it is issued to")],
    purpose: Annotated[str, typer.Option(help="The one purpose it serves")],
    valid_until: Annotated[str, typer.Option(help="End (exclusive): YYYY-MM-DD or RFC 3339")],
    valid_from: Annotated[
        str | None, typer.Option(help="Start: YYYY-MM-DD or RFC 3339 [default: now]")
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="Dataset it covers (repeat)")
    ] = None,
    group: Annotated[
        list[str] | None, typer.Option("--group", help="Dataset group it covers (repeat)")
    ] = None,
    obligation: Annotated[
        list[str] | None,
        typer.Option("--obligation", help="name=value, e.g. epsilon_per_job=0.5 (repeat)"),
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Issue a grant; recorded on the ledger, in force from the next decision."""
    from indomain.errors import ConfigError
    from indomain.grants import issue_grant
    from indomain.registry import Grant, parse_expiry

    with errors(), open_sandbox(home) as sandbox:
        obligations = {}
        for item in obligation or []:
            name, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--obligation {item!r}: write name=value")
            obligations[name.strip()] = value.strip()
        grant = issue_grant(
            sandbox,
            Grant(
                id=grant_id,
                holder=enterprise,
                purpose=purpose,
                valid_from=parse_expiry(valid_from) if valid_from else datetime.now(UTC),
                valid_until=parse_expiry(valid_until),
                datasets=tuple(sorted(set(dataset or []))),
                groups=tuple(sorted(set(group or []))),
                obligations=obligations,
                status="active",
            ),
        )
        console.print(f"issued grant [bold]{grant.id}[/] to {grant.holder} ({grant.purpose})")


@grant_app.command("list")
def grant_list(
    enterprise: Annotated[str | None, typer.Option(help="Only this holder's grants")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List grants with their holder, purpose, window, coverage and status."""
    from indomain.commands.common import rows_table

    with errors(), open_sandbox(home) as sandbox:
        grants = [g.to_json() for g in sandbox.registry.grants(enterprise)]
        if as_json:
            print(json.dumps(grants, indent=2, ensure_ascii=False))
            return
        columns = ["id", "holder", "purpose", "valid_from", "valid_until", "datasets", "groups"]
        console.print(rows_table([*columns, "obligations", "status"], grants))


def _grant_status(grant_id: str, status: str, home: Path | None) -> None:
    from indomain.grants import set_grant_status

    with errors(), open_sandbox(home) as sandbox:
        grant = set_grant_status(sandbox, grant_id, status)
        console.print(f"grant [bold]{grant.id}[/] is now {grant.status}")


@grant_app.command("revoke")
def grant_revoke(grant_id: Annotated[str, typer.Argument()], home: HomeOpt = None) -> None:
    """Revoke a grant: its permits allow nothing from the next decision on."""
    _grant_status(grant_id, "revoked", home)


@grant_app.command("reinstate")
def grant_reinstate(grant_id: Annotated[str, typer.Argument()], home: HomeOpt = None) -> None:
    """Reinstate a revoked grant (its validity window still applies)."""
    _grant_status(grant_id, "active", home)
