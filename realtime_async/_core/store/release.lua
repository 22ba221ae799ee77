-- Release locks the task still holds.
-- KEYS: the task's lock set, then the keys to release (none: all of them).
-- ARGV: task. A key taken over by another task is left alone. Returns how many were freed.
local keys = {}
if #KEYS > 1 then for i = 2, #KEYS do table.insert(keys, KEYS[i]) end
else keys = redis.call('SMEMBERS', KEYS[1]) end
local freed = 0
for _, key in ipairs(keys) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key); freed = freed + 1 end
  redis.call('SREM', KEYS[1], key)
end
return freed
