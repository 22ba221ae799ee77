-- Read a task's log lines numbered above ARGV[1]; see Store.read_log in base.py.
-- KEYS: task hash, log list. The list holds lines last - LLEN + 1 .. last, in order.
-- Returns {last, dropped, lines...}.
local last = tonumber(redis.call('HGET', KEYS[1], 'logn') or '0')
local dropped = tonumber(redis.call('HGET', KEYS[1], 'logd') or '0')
local count = redis.call('LLEN', KEYS[2])
local start = math.max(0, tonumber(ARGV[1]) - (last - count))
local result = {last, dropped}
if start < count then
  for _, line in ipairs(redis.call('LRANGE', KEYS[2], start, -1)) do table.insert(result, line) end
end
return result
