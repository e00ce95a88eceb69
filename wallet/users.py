"""Wallet users: lookup by Alipay+'s identifiers, and the demo users the sandbox pays with."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from alipayplus import Amount
from wallet.db import reader

from .ledger import Ledger
from .records import WalletUser
from .secrets import PIN_SCRYPT_COST, keyed_digest, pin_verifier
from .states import UserStatus, VerificationMethod

DEMO_PIN = "246810"


@dataclass(frozen=True)
class DemoUser:
    customer_id: str
    login_id: str
    status: UserStatus
    verification_method: VerificationMethod
    phone: str
    balance: int  # minor units, funded through the ledger
    pin: str | None = DEMO_PIN
    login_id_type: str = "MOBILE"
    currency: str = "IDR"
    single_payment_limit: int = 5_000_000
    daily_limit: int = 20_000_000
    kyc_verified: bool = True
    daily_payment_count_limit: int = 100


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser(  # the sample user of the Alipay+ sandbox's seed data
        customer_id="2160220037535020",
        login_id="852-95303585",
        status=UserStatus.ACTIVE,
        verification_method=VerificationMethod.OTP,
        phone="+85295303585",
        balance=10_000_000,
        pin=None,
    ),
    DemoUser(  # ``make demo``'s busiest payer (~60 payments a run): a few runs a day stay under its count
        customer_id="2160220037535021",
        login_id="852-11112222",
        status=UserStatus.ACTIVE,
        verification_method=VerificationMethod.PIN,
        phone="+85211112222",
        balance=10_000_000,
        daily_payment_count_limit=1_000,
    ),
    DemoUser(
        customer_id="2160220037535022",
        login_id="852-33334444",
        status=UserStatus.FROZEN,
        verification_method=VerificationMethod.PIN,
        phone="+85233334444",
        balance=10_000_000,
    ),
    DemoUser(  # "poor": too little money for almost any payment
        customer_id="2160220037535023",
        login_id="852-55556666",
        status=UserStatus.ACTIVE,
        verification_method=VerificationMethod.PIN,
        phone="+85255556666",
        balance=40,
    ),
    DemoUser(  # KYC not completed: may hold money, may not pay (USER_KYC_NOT_QUALIFIED)
        customer_id="2160220037535024",
        login_id="852-77778888",
        status=UserStatus.ACTIVE,
        verification_method=VerificationMethod.PIN,
        phone="+85277778888",
        balance=10_000_000,
        kyc_verified=False,
    ),
    DemoUser(  # a KRW wallet: seed 003's sample pays 1000 KRW for a 100 JPY order
        customer_id="2160220037535031",
        login_id="82-1012345678",
        status=UserStatus.ACTIVE,
        verification_method=VerificationMethod.PIN,
        phone="+821012345678",
        balance=1_000_000,
        currency="KRW",
        single_payment_limit=500_000,
        daily_limit=2_000_000,
    ),
)


class UserStore:
    """Reads wallet users. Returned users are detached: plain values, safe to pass around."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = reader(engine)

    def get(self, customer_id: str) -> WalletUser | None:
        with Session(self._reader) as session:
            return session.get(WalletUser, customer_id)

    def find(self, payment_method_id: str | None, login_id: str | None, login_id_type: str | None) -> WalletUser | None:
        """The user a payment names: by ``paymentMethodId`` (our customer id), else by login.

        ``login_id_type`` ("MOBILE", "mobile", …) is compared without regard to case.
        """
        if payment_method_id:
            user = self.get(payment_method_id)
            if user is not None:
                return user
        if not login_id or not login_id_type:
            return None
        with Session(self._reader) as session:
            return session.exec(
                select(WalletUser).where(
                    col(WalletUser.login_id) == login_id,
                    func.upper(col(WalletUser.login_id_type)) == login_id_type.upper(),
                )
            ).first()

    def seed_demo_users(self, ledger: Ledger, secret_key: bytes, pin_cost: int = PIN_SCRYPT_COST) -> list[WalletUser]:
        """Create and fund ``DEMO_USERS``; running it again changes nothing.

        Existing users are left as they are (a PIN changed since stays changed); funding is one
        ledger posting per user under the idempotency key ``seed/{customer_id}``, so it happens once.
        """
        users: list[WalletUser] = []
        for demo in DEMO_USERS:
            account_id = ledger.open_user(demo.customer_id, demo.currency)
            if self.get(demo.customer_id) is None:
                pin_digest = None
                if demo.pin is not None:
                    pin_digest = pin_verifier(keyed_digest(secret_key, "pin", demo.customer_id, demo.pin), pin_cost)
                self._add_if_missing(
                    WalletUser(
                        customer_id=demo.customer_id,
                        login_id=demo.login_id,
                        login_id_type=demo.login_id_type,
                        status=demo.status,
                        phone=demo.phone,
                        verification_method=demo.verification_method,
                        pin_digest=pin_digest,
                        currency=demo.currency,
                        single_payment_limit=demo.single_payment_limit,
                        daily_limit=demo.daily_limit,
                        account_id=account_id,
                        kyc_verified=demo.kyc_verified,
                        daily_payment_count_limit=demo.daily_payment_count_limit,
                    )
                )
            ledger.fund_user(f"seed/{demo.customer_id}", account_id, Amount(currency=demo.currency, value=demo.balance))
            user = self.get(demo.customer_id)
            if user is None:
                raise RuntimeError(f"demo user {demo.customer_id} could not be created")
            users.append(user)
        return users

    def _add_if_missing(self, user: WalletUser) -> None:
        with Session(self._engine) as session:
            if session.get(WalletUser, user.customer_id) is not None:
                return
            session.add(user)
            try:
                session.commit()
            except IntegrityError:
                # added concurrently by another process (the caller checks the result), or
                # its login belongs to someone else (then the caller's get() finds nobody)
                session.rollback()
