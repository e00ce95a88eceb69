"""Whether a user may pay an amount: the wallet's account checks, in the order Alipay+ expects."""

from __future__ import annotations

from alipayplus import Amount, ResultCode

from .records import WalletUser
from .states import UserStatus


def evaluate_account(
    user: WalletUser | None, amount: Amount, debited_today: int, balance: int, payments_today: int = 0
) -> ResultCode:
    """``ResultCode.SUCCESS`` if ``user`` may pay ``amount`` now, else the first reason not to.

    ``debited_today`` is what the user has already paid today (``Ledger.debits_since``) and
    ``balance`` their account's balance, both in minor units of the user's currency;
    ``payments_today`` how many payments they made today.
    """
    if user is None:
        return ResultCode.USER_NOT_EXIST
    if user.status != UserStatus.ACTIVE:
        return ResultCode.USER_STATUS_ABNORMAL
    if not user.kyc_verified:
        return ResultCode.USER_KYC_NOT_QUALIFIED
    if amount.currency != user.currency:
        return ResultCode.CURRENCY_NOT_SUPPORT
    if amount.value > user.single_payment_limit:
        return ResultCode.PAYMENT_AMOUNT_EXCEED_LIMIT
    if payments_today >= user.daily_payment_count_limit:
        return ResultCode.PAYMENT_COUNT_EXCEED_LIMIT
    if debited_today + amount.value > user.daily_limit:
        return ResultCode.USER_AMOUNT_EXCEED_LIMIT
    if balance < amount.value:
        return ResultCode.USER_BALANCE_NOT_ENOUGH
    return ResultCode.SUCCESS
