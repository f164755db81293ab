-- Issue 10: an event's own IANA time zone, in which its emails show its times. NULL (events created
-- before this column) means SCHEDULER_TIMEZONE, as before.
ALTER TABLE events ADD COLUMN timezone text;
