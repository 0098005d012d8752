"""The rules of the job lifecycle, pure (no I/O; time and randomness passed in).

attempt     what executing one attempt produces
outcomes    what an attempt's end does to its job (the Settlement storage applies)
states      the job state machine: initial state, operator actions, promote and claim
triggers    schedules (cron, interval, date): validation and next fire times
recurrence  the next occurrence of a recurring job, with its misfire policy
backoff     the wait before a retry
"""
