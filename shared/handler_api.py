"""What a job handler may use, in one place: its context, the errors it raises or meets, and what it
needs to enqueue more work. Handlers import from here, never from the consumer's hot path or the client.

    @handles(SMS_REMINDER)                       # the kind's declaration (shared/kinds.py)
    async def send_sms(ctx: JobContext, args: SmsArgs) -> dict[str, str]:
        if not args.phone.startswith("+"):
            raise PermanentError("phone numbers need a country code")   # fails at once, no retries
        await ctx.progress(1, 1, "sent")
        return {"to": args.phone}
"""

from __future__ import annotations

from shared.client import IdempotencyConflict, JobSpec
from shared.jobs import QueueClass
from shared.messaging.consumer import Handler, JobContext
from shared.registry import InvalidJobArguments, PermanentError, handlers_on, handles

__all__ = ["Handler", "IdempotencyConflict", "InvalidJobArguments", "JobContext", "JobSpec", "PermanentError",
           "QueueClass", "handlers_on", "handles"]
