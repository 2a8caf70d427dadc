-- prune_consumers.lua: deletes the consumers of the group that hold no pending jobs and have
-- been idle for longer than ARGV[2] ms (processes that are gone), so the group does not grow
-- with every restart of every worker. A live consumer deleted this way is created again by its
-- next read, and one that holds jobs is never deleted (its jobs come back through their leases).
--
-- KEYS[1]  the job stream
-- ARGV[1]  consumer group        ARGV[2]  idle time, ms
-- Returns  the number of consumers deleted (0 when there is no stream or group yet).

local idle_limit = tonumber(ARGV[2])
if not idle_limit or idle_limit < 0 then
  return redis.error_reply('ERR prune_consumers: bad idle time')
end
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) ~= 'table' or consumers.err then
  return 0
end
local deleted = 0
for _, consumer in ipairs(consumers) do
  local info = {}
  for i = 1, #consumer - 1, 2 do
    info[consumer[i]] = consumer[i + 1]
  end
  if tonumber(info['pending']) == 0 and tonumber(info['idle']) > idle_limit then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    deleted = deleted + 1
  end
end
return deleted
