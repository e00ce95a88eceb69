"""A stand-in for Alipay+ so the whole Easy Pay flow runs on one machine.

``app.create_app`` serves what the MPP calls (notifyPayment, authNotify, the SMS gateway, the
result page) for a ``peer.SandboxAlipayPlus``; ``driver.AlipayPlusDriver`` sends what Alipay+
sends (pay, inquiryPayment); ``inquiry.InquiryScheduleWorkflow`` is Alipay+'s inquiry schedule.

Import from the modules: this package stays empty so that Temporal's workflow sandbox can
load ``inquiry`` without importing FastAPI or httpx.
"""
