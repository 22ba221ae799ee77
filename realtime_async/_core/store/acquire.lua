-- Take every lock or none.
-- KEYS: the task's lock set, then one key per object. ARGV: task, lock ttl ms, set ttl ms.
-- Returns {key, holder, ...} of the locks held by other tasks (nothing taken), or {}.
local held = {}
for i = 2, #KEYS do
  local holder = redis.call('GET', KEYS[i])
  if holder and holder ~= ARGV[1] then
    table.insert(held, KEYS[i]); table.insert(held, holder)
  end
end
if #held > 0 then return held end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  redis.call('SADD', KEYS[1], KEYS[i])
end
-- The set outlives its locks: after they expire it still says what the task reserved.
if #KEYS > 1 then redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]), tonumber(ARGV[3]))) end
return held
