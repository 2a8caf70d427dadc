-- ack_many.lua: acks many deliveries at once (a worker's batch), each only if it is still the
-- current delivery of its entry (pending, with the delivery count of its receipt), exactly as
-- settle.lua's 'ack' does for one.
--
-- KEYS[1]  the job stream        KEYS[2]  the lease set
-- ARGV[1]  consumer group        ARGV[2k], ARGV[2k+1]  entry id and delivery count, k = 1..n
-- Returns  how many deliveries were acked (stale receipts change nothing).

local stream, leases = KEYS[1], KEYS[2]
local group = ARGV[1]
local acked = 0
for i = 2, #ARGV - 1, 2 do
  local id, deliveries = ARGV[i], tonumber(ARGV[i + 1])
  local pending = redis.pcall('XPENDING', stream, group, id, id, 1)
  if type(pending) ~= 'table' or pending.err then
    -- No stream or no group (Redis was flushed): every delivery is gone already.
    return acked
  end
  if deliveries and pending[1] and tonumber(pending[1][4]) == deliveries then
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    redis.call('ZREM', leases, id)
    acked = acked + 1
  end
end
return acked
