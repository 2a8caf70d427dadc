-- fixed_window.lua: counts one request against each limiter, in order, in one atomic call,
-- stopping at the first refusal (limiters after it are not counted). Windows are aligned to the
-- Unix epoch on Redis's own clock (TIME), so every server sharing this Redis shares windows.
--
-- KEYS[i]      the counter of limiter i without its window: <prefix>:rl:<policy>:<len>:{<identity>}
--              (the window number is appended here: ":<index>")
-- ARGV[2i-1]   the limit of limiter i (requests per window, >= 1)
-- ARGV[2i]     the window length of limiter i, in microseconds (>= 1)
-- Returns      { count_1, elapsed_us_1, count_2, elapsed_us_2, ... } for each limiter counted:
--              the count in the current window (this request included) and how far into the
--              window this request is. The last pair is the refusal, if any (count > limit).
-- Every counter gets a TTL to the end of its window when created, and again whenever it is found
-- without one, so no counter key outlives its window.

if #ARGV ~= 2 * #KEYS then
  return redis.error_reply('ERR fixed_window: need a limit and a window per key')
end
for i = 1, #KEYS do
  local limit, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if not limit or limit < 1 or not window or window < 1 then
    return redis.error_reply('ERR fixed_window: bad limit or window for key ' .. i)
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, base in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local index = math.floor(now / window)
  local elapsed = now - index * window
  local key = base .. ':' .. string.format('%.0f', index)
  local count = redis.call('INCR', key)
  if count == 1 or redis.call('PTTL', key) == -1 then
    redis.call('PEXPIRE', key, math.max(1, math.ceil((window - elapsed) / 1000)))
  end
  out[#out + 1] = count
  out[#out + 1] = elapsed
  if count > limit then
    break
  end
end
return out
