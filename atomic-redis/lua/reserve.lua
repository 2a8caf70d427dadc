-- reserve.lua: delivers up to ARGV[3] jobs to one consumer, atomically. First, delayed jobs that
-- are due are moved into the stream (each exactly once: moved and removed in this one call);
-- then deliveries whose lease has run out (a lost or slow worker's) are claimed again, which
-- raises their delivery count; then new entries are read. Every delivery gets a lease until
-- now + visibility, so the visibility is the one the reserving worker asked for.
--
-- KEYS[1]  the job stream            KEYS[2]  the delayed set (score: due, ms)
-- KEYS[3]  the lease set (member: entry id, score: lease end, ms)
-- KEYS[4]  the dead-letter stream (for entries that are not jobs)
-- ARGV[1]  consumer group            ARGV[2]  consumer name
-- ARGV[3]  max deliveries (>= 1)     ARGV[4]  visibility, ms (>= 0)
-- Returns  { next_due_ms, last_id, id_1, deliveries_1, payment_1, attempt_1, id_2, ... }, all
--          strings: next_due_ms is how long until a delayed job is due or a lease runs out (-1:
--          none), last_id the newest entry id (a blocking XREAD waits for entries after it).
-- Errors   NOGROUP when the stream or the group does not exist (the caller creates them).

local stream, delayed, leases, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, consumer = ARGV[1], ARGV[2]
local max, visibility = tonumber(ARGV[3]), tonumber(ARGV[4])
if not max or max < 1 or not visibility or visibility < 0 then
  return redis.error_reply('ERR reserve: bad max or visibility')
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_end = now + visibility

local function field(fields, name)
  for i = 1, #fields - 1, 2 do
    if fields[i] == name then
      return fields[i + 1]
    end
  end
  return nil
end

local out = { '-1', '0-0' }
local taken = 0

-- Hands one entry to the caller, or dead-letters it if it is not a job.
local function deliver(id, fields, deliveries)
  local payment, attempt = field(fields, 'p'), tonumber(field(fields, 'a') or '')
  if not payment or not attempt then
    redis.call('XADD', dead, 'MAXLEN', '~', 100000, '*', 'p', payment or '', 'a', '0',
      'reason', 'not a job entry', 'entry', id)
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    redis.call('ZREM', leases, id)
    return
  end
  redis.call('ZADD', leases, string.format('%.0f', lease_end), id)
  out[#out + 1] = id
  out[#out + 1] = tostring(deliveries)
  out[#out + 1] = payment
  out[#out + 1] = string.format('%.0f', attempt)
  taken = taken + 1
end

-- 1. Due delayed jobs back into the stream (member: "<attempt>:<payment>:<old entry id>").
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 100)
for _, member in ipairs(due) do
  local attempt, payment = string.match(member, '^(%d+):([^:]+):')
  if attempt then
    redis.call('XADD', stream, '*', 'p', payment, 'a', attempt)
  end
  redis.call('ZREM', delayed, member)
end

-- 2. Deliveries whose lease has run out are claimed again (delivery count + 1).
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, max)
for _, id in ipairs(expired) do
  redis.call('ZREM', leases, id)
  local claimed = redis.call('XCLAIM', stream, group, consumer, 0, id)
  local entry = claimed[1]
  if entry and type(entry[2]) == 'table' then
    local pending = redis.call('XPENDING', stream, group, id, id, 1)
    local deliveries = (pending[1] and tonumber(pending[1][4])) or 1
    deliver(id, entry[2], deliveries)
  else
    -- Not pending any more, or the entry is gone: nothing to deliver.
    redis.call('XACK', stream, group, id)
  end
end

-- 3. New entries.
if taken < max then
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', max - taken,
    'STREAMS', stream, '>')
  if read and read[1] then
    for _, entry in ipairs(read[1][2]) do
      deliver(entry[1], entry[2], 1)
    end
  end
end

-- When the caller should look again if it got nothing: the next due job or lease end.
local next_due = -1
for _, set in ipairs({ delayed, leases }) do
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[2] then
    local gap = math.max(0, tonumber(first[2]) - now)
    if next_due < 0 or gap < next_due then
      next_due = gap
    end
  end
end
out[1] = string.format('%.0f', next_due)
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
if last[1] then
  out[2] = last[1][1]
end
return out
