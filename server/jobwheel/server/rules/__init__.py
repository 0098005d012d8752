"""The rules of the job lifecycle, pure (no I/O; time and randomness passed in).

attempt     what executing one attempt produces
states      the job state machine: initial state, promote and claim, attempt ends (the
            Settlement storage applies), operator actions
schedules   a schedule's own consistency rules
triggers    schedules (cron, interval, date): validation and next fire times
recurrence  the next occurrence of a recurring job, with its misfire policy
backoff     the wait before a retry
"""
