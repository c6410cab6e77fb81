"""Access decisions by Cedar policies, failing closed.

Principal = ``Enterprise`` (licence number, expiry and status from the bureau's
registry), resource = ``Dataset`` (sensitivity, member of ``DatasetGroup`` entities),
action = the computation's name, context = ``{ purpose, now, job: { epsilon, columns } }``
(the documented schema is ``indomain/demo/policies/schema.cedarschema``; see
``docs/policies.md``). A policy folder holds ``schema.cedarschema`` and ``*.cedar`` files;
:meth:`PolicySet.load` validates it (every policy schema-checked, named by a unique
``@id``, its annotations known obligations) and :func:`decide` evaluates one
:class:`AccessRequest` to a :class:`Decision` naming the policies that determined it and
the obligations they impose, merged strictest-first. :func:`explain` says which
conditions failed; :func:`lint` finds grants without purpose or expiry and unreachable
permits; :func:`run_cases` runs an author's YAML cases; :func:`message` renders a
decision in English or Chinese by its stable id.
"""

from policies._cases import CaseResult, run_cases
from policies._decide import AccessRequest, Decision, decide
from policies._errors import PolicyError, PolicyInvalid
from policies._explain import ConditionCheck, Explanation, PolicyCheck, explain
from policies._lint import LintFinding, lint
from policies._messages import message
from policies._obligations import merge_obligations
from policies._policy_set import PolicySet

__all__ = [
    "AccessRequest",
    "CaseResult",
    "ConditionCheck",
    "Decision",
    "Explanation",
    "LintFinding",
    "PolicyCheck",
    "PolicyError",
    "PolicyInvalid",
    "PolicySet",
    "decide",
    "explain",
    "lint",
    "merge_obligations",
    "message",
    "run_cases",
]
