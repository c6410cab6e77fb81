"""Access decisions by Cedar policies, failing closed.

Principal = ``Enterprise``, resource = ``Dataset``, action = the computation's name,
context = ``{ purpose: String, now: datetime }``. A policy folder holds
``schema.cedarschema`` and ``*.cedar`` files; :meth:`PolicySet.load` validates it (every
policy schema-checked and named by a unique ``@id``) and :func:`decide` evaluates one
:class:`AccessRequest` to a :class:`Decision` naming the policies that determined it.
"""

from policies._decide import AccessRequest, Decision, decide
from policies._errors import PolicyError, PolicyInvalid
from policies._policy_set import PolicySet

__all__ = [
    "AccessRequest",
    "Decision",
    "PolicyError",
    "PolicyInvalid",
    "PolicySet",
    "decide",
]
