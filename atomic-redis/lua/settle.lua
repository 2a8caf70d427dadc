-- settle.lua: ends one delivery, atomically: ack (done), retry (back after a delay, attempt + 1)
-- or dead-letter (kept in the dead-letter stream for an operator). The delivery must still be
-- the current one: the entry is pending and its delivery count is the one in the receipt. A
-- receipt of an earlier delivery (a worker whose lease ran out and whose job went to another)
-- changes nothing, so a late ack never takes a live delivery away.
--
-- KEYS[1]  the job stream        KEYS[2]  the delayed set      KEYS[3]  the lease set
-- KEYS[4]  the dead-letter stream
-- ARGV[1]  consumer group        ARGV[2]  entry id             ARGV[3]  delivery count
-- ARGV[4]  'ack' | 'retry' | 'dead'
-- ARGV[5]  retry: delay in ms;   dead: the reason
-- Returns  1 if the delivery was settled, 0 if the receipt is stale (nothing changed).

local stream, delayed, leases, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, id, deliveries, action = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if not deliveries or (action ~= 'ack' and action ~= 'retry' and action ~= 'dead') then
  return redis.error_reply('ERR settle: bad delivery count or action')
end

local pending = redis.pcall('XPENDING', stream, group, id, id, 1)
if type(pending) ~= 'table' or pending.err then
  -- No stream or no group (Redis was flushed): the delivery is gone already.
  return 0
end
if not pending[1] or tonumber(pending[1][4]) ~= deliveries then
  return 0
end

local function field(fields, name)
  for i = 1, #fields - 1, 2 do
    if fields[i] == name then
      return fields[i + 1]
    end
  end
  return nil
end

if action ~= 'ack' then
  local entry = redis.call('XRANGE', stream, id, id)[1]
  local payment = entry and field(entry[2], 'p')
  local base = entry and tonumber(field(entry[2], 'a') or '')
  if payment and base then
    local attempt = base + deliveries - 1
    if action == 'retry' then
      local delay = tonumber(ARGV[5])
      if not delay or delay < 0 then
        return redis.error_reply('ERR settle: bad delay')
      end
      local t = redis.call('TIME')
      local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      redis.call('ZADD', delayed, string.format('%.0f', now + delay),
        string.format('%.0f', attempt + 1) .. ':' .. payment .. ':' .. id)
    else
      redis.call('XADD', dead, 'MAXLEN', '~', 100000, '*', 'p', payment,
        'a', string.format('%.0f', attempt), 'reason', ARGV[5] or '', 'entry', id)
    end
  end
end

redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
redis.call('ZREM', leases, id)
return 1
