"""The activation workflow's proxied SDK request, over ``wallet.nfc_proxy``: a refused request
(not an allow-listed API) fails for good, anything else is retried."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from wallet.nfc_proxy import NfcProxy, ProxyRefused, SdkAnswer, SdkCall


@dataclass
class NfcActivities:
    proxy: NfcProxy

    @activity.defn
    async def sdk_request(self, call: SdkCall) -> SdkAnswer:
        """One proxied SDK request of an activation (the workflow's step)."""
        try:
            return await self.proxy.forward(call)
        except ProxyRefused as exc:
            raise ApplicationError(str(exc), type="ProxyRefused", non_retryable=True) from None
