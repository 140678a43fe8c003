-- GCRA, as governor computes it, for one or two buckets at once, on Redis' clock.
--
-- KEYS[i]          a bucket: its value is the theoretical arrival time (TAT), in
--                  microseconds of Redis' own clock
-- ARGV[2i-1]       the bucket's emission interval T (one call every T), in µs
-- ARGV[2i]         its tolerance tau = T * (burst - 1), in µs
--
-- A call is admitted if every bucket admits it (now >= TAT - tau), and then each
-- bucket's TAT becomes max(TAT, now) + T; a refusal changes nothing. Returns
-- {0, 0} when admitted, {i, wait_us} when bucket i refused, wait_us being the
-- time until it would admit.
--
-- The clock is Redis' TIME, so replicas with skewed clocks agree. A bucket
-- expires when it is full again (TAT - now, at most tau + T), so Redis holds a
-- client only while it is spending its quota. Redis 5+ replicates scripts by
-- their effects, so reading TIME before writing is allowed.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local next_tat = {}
for i, key in ipairs(KEYS) do
  local t = tonumber(ARGV[2 * i - 1])
  local tau = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then
    tat = now
  end
  if now < tat - tau then
    return {i, tat - tau - now}
  end
  next_tat[i] = tat + t
end
for i, key in ipairs(KEYS) do
  local ttl_ms = math.ceil((next_tat[i] - now) / 1000)
  redis.call('SET', key, string.format('%.0f', next_tat[i]), 'PX', ttl_ms)
end
return {0, 0}
