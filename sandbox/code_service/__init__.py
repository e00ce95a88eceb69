"""The Alipay+ server SDK's code identification service, as a sandbox peer (seed 003, step 3).

In the real network ``ac.code.service.CodeIdentificationService`` is Ant's library running
beside the MPP's server with Alipay+'s code rules; here it answers over plain JSON so the MPP
can be tested against it: ``CodeService`` holds the rules and the scripted answers,
``code_service_router`` serves it.
"""

from .router import code_service_router
from .service import ENTRY_CODE_PREFIX, ORDER_CODE_PREFIX, CodeService

__all__ = ["ENTRY_CODE_PREFIX", "ORDER_CODE_PREFIX", "CodeService", "code_service_router"]
