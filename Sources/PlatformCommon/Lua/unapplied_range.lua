-- KEYS[1]: a partition's stream. ARGV: consumer group, the id to read after ('' for the group's
-- first unacknowledged entry), count. Returns XRANGE's entries: a catch-up's next batch.
local start = ARGV[2] ~= '' and ('(' .. ARGV[2]) or unappliedStart(KEYS[1], ARGV[1])
return redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[3])
