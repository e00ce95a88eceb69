"""The two pay requests Alipay+ sends in seed 004 (Easy Pay), byte for byte.

Public documentation samples (docs.alipayplus.com, Easy Pay integration guide), kept
verbatim, including their odd spacing, so tests exercise the exact bytes Alipay+ publishes.
"""

from __future__ import annotations

# Step 1: the account check (isPaymentEvaluation "true").
EVALUATION_SAMPLE: bytes = rb"""{
    "acquirerId": "1022188000000000001",
    "order":
    {
        "merchant":
        {
            "merchantAddress":
            {
                "region": "SG"
            },
            "merchantDisplayName": "testAliasName",
            "merchantMCC": "5021",
            "merchantName": "testAliasName",
            "referenceMerchantId": "2188120040699147"
        },
        "orderAmount":
        {
            "currency": "IDR",
            "value": "50"
        },
        "orderDescription": "c05c200e-ba24-40bc-a009-a29974bf7f7b",
        "referenceOrderId": "c05c200e-ba24-40bc-a009-a29974bf7f7b"
    },
    "payToAmount":
    {
        "currency": "IDR",
        "value": "50"
    },
    "paymentAmount":
    {
        "currency": "IDR",
        "value": "50"
    },
    "paymentFactor":
    {
        "isAgreementPayment": "true",
        "isEasyPayScenario": "true",
        "isPaymentEvaluation": "true"
    },
    "paymentMethod":
    {
        "paymentMethodId": "",
        "paymentMethodMetaData":
        {
            "userLoginId": "852-95303585",
            "userLoginIdType": "MOBILE"
        },
        "paymentMethodType": "ALIPAY_HK"
    },
    "paymentRequestId": "2023091819074101000930025674948",
    "pspId": "1022160000000000000"
}"""

# Step 2: the payment order with one-click authorisation (isAuthorizationAndPay "true").
ORDER_SAMPLE: bytes = rb"""{
    "acquirerId": "1022188000000000001",
    "extendInfo": "{\"acqToMerchantSettleFxMode\":\"NON_LOCKING\",\"fxRateBizScene\":\"COMMON_QUOTE\",\"settleContractId\":\"2022050219046000100142100082205\",\"merchantSettlementArea\":\"HK\",\"isLocalSettlement\":false,\"acqSiteMerchantInfo\":{\"merchantId\":\"2188120040699147\",\"merchantName\":\"testAliasName\"},\"fxPdCode\":\"Merchant_Live_KA\",\"settleProductCode\":\"MC400300000000000036\"}",
    "order":
    {
        "env":
        {},
        "merchant":
        {
            "merchantAddress":
            {
                "region": "SG"
            },
            "merchantDisplayName": "testAliasName",
            "merchantMCC": "5021",
            "merchantName": "testAliasName",
            "referenceMerchantId": "2188120040699147"
        },
        "orderAmount":
        {
            "currency": "IDR",
            "value": "50"
        },
        "orderDescription": "AMSDM_GIFT",
        "referenceOrderId": "amsdmorder_wuyunkun_wyk_20230918_093653_794"
    },
    "passThroughInfo": "{\"buyerId\":\"wuyunkun.wyk\",\"gaid\":\"\",\"merchantTerminalType\":\"android\",\"pinRedirectUrl\":\"https://ac.alipay.com/page/antom-web-checkout/src/component-app/doubleFA/index.html?paymentSessionData=n5xHy7LlExD8%2BaNKekkKwPm%2FotYQ3UjTXDoh5tlj4R8QajYr0lNjqv%2B%2FOkMs4QLvfHFwC9QkDRio2sX34SSATg%3D%3D%26%26SG%26%26188&ps=EASY_PAY&pmct=WALLET&psv=2.0&app=app&en_US=en_US\",\"renderGroup\":\"h5\",\"securityCode\":\"****************************************************************\"}",
    "payToAmount":
    {
        "currency": "IDR",
        "value": "50"
    },
    "paymentAmount":
    {
        "currency": "IDR",
        "value": "50"
    },
    "paymentExpiryTime": "2023-09-18T09:47:51+08:00",
    "authorizationInfo":
    {
        "authClientId": "2188120040699147",
        "authState": "authStatus_0918001002",
        "referenceAgreementId": "2023091819074101000380025683717"
    },
    "paymentFactor":
    {
        "isAgreementPayment": "true",
        "isAuthorizationAndPay": "true",
        "isEasyPayScenario": "true"
    },
    "paymentMethod":
    {
        "paymentMethodMetaData":
        {
            "userLoginId": "852-95303585",
            "userLoginIdType": "MOBILE"
        },
        "paymentMethodType": "ALIPAY_HK"
    },
    "paymentRequestId": "2023091819074101000380025683717",
    "pspId": "1022160000000000000",
    "paymentRedirectUrl":"https://ac.alipay.com/page/antom-web-checkout/src/component-app/doubleFA/index.html?paymentSessionData=n5xHy7LlExD8%2BaNKekkKwPm%2FotYQ3UjTXDoh5tlj4R8QajYr0lNjqv%2B%2FOkMs4QLvfHFwC9QkDRio2sX34SSATg%3D%3D%26%26SG%26%26188&ps=EASY_PAY&pmct=WALLET&psv=2.0&app=app&en_US=en_US"
}"""
