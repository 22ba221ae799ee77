-- A part's write reaches its group: run in the same MULTI as write.lua (one round trip, atomic).
-- FINAL (a set of the final states), STATE (each state by its name) and STATES (in the order
-- a group counts them) are put before this script by redis_store.py, from records.py, and
-- PART_CANCELLED from messages.py.
-- KEYS: the part's hash, the parent's hash, the parent's parts hash, the parent's lock set,
--       the active registry, the parent's cancel flag.
-- ARGV: the part's name, the parent's name, the publish interval (ms), the final ttl (ms),
--       the progress ttl (ms), the cancel flags' key prefix, the cancel flags' ttl (ms),
--       "1" to settle (no part changed: decide again, as cleanup does), then where the
--       parent's record is published: a message head and the channels (see PUBLISHED).
-- The parts hash holds, per part, {"s": state, "p": percent, "w": weight, "t": title,
-- "e": public error once it failed} as of its last write; the parent's hash holds the aggregate: 'g:<state>' counts, 'g:wp' the sum of
-- weight × percent, 'g:sumw', 'g:parts', 'g:ended' (parts final), 'g:policy', 'g:pub'
-- (when the parent was last published, ms) and 'g:dirty'. A part's write changes them
-- by its own difference only: O(1) whatever the group's size.
-- The parent's record is rewritten and published at most once per interval (a final
-- state always); otherwise it is marked dirty and the caller flushes it later
-- (ARGV[8] = "1" with no part change, after the interval).
-- A group with a fan-in step ('then'): when every part succeeded, the one write that
-- saw it last returns the step's name to start it (its entry, marked "x", counts in the
-- percent only); the group ends with the step's final state. A chain ('g:kind' chain)
-- runs its parts one after another: the write that ended step i returns step i + 1 to
-- start (unless the chain ended), and each step is a stage of the parent's record.
-- Returns {0} (nothing to do), {1, record, final state or "", the task to start or "",
-- then pairs of part and state not final when the group ended}
-- (published), or {2, ms until the parent may be published} (dirty).
local parent_state = redis.call('HGET', KEYS[2], 'state')
if not parent_state then return {0} end
local changed = false
local then_ended = nil  -- the fan-in step's final state, when this write ended it
local then_error = nil
local step_ended = nil  -- a chain: the index of the part this write ended, and how
local step_state = nil
if ARGV[8] ~= '1' then
  local rec = redis.call('HGET', KEYS[1], 'rec')
  local packed = redis.call('HGET', KEYS[3], ARGV[1])
  if not rec or not packed then return {0} end
  local part, before = cjson.decode(rec), cjson.decode(packed)
  local state = part.state
  local percent = tonumber(part.percent) or 0
  if state == STATE.success then percent = 100 end
  if state == before.s and percent == before.p then return {0} end
  local weight = tonumber(before.w)
  redis.call('HINCRBYFLOAT', KEYS[2], 'g:wp', weight * (percent - before.p))
  if before.x then  -- the fan-in step: in the percent, not in the counts
    if FINAL[state] and not FINAL[before.s] then then_ended, then_error = state, part.error end
  else
    redis.call('HINCRBY', KEYS[2], 'g:' .. before.s, -1)
    redis.call('HINCRBY', KEYS[2], 'g:' .. state, 1)
    if FINAL[state] and not FINAL[before.s] then
      redis.call('HINCRBY', KEYS[2], 'g:ended', 1)
      step_ended, step_state = before.i, state
    end
  end
  before.s, before.p = state, percent
  if FINAL[state] and type(part.error) == 'string' then before.e = part.error end
  redis.call('HSET', KEYS[3], ARGV[1], cjson.encode(before))
  changed = true
end
if FINAL[parent_state] then return {0} end
local function count(state) return tonumber(redis.call('HGET', KEYS[2], 'g:' .. state) or '0') end
local parts = tonumber(redis.call('HGET', KEYS[2], 'g:parts'))
local ended = tonumber(redis.call('HGET', KEYS[2], 'g:ended') or '0')
local policy = redis.call('HGET', KEYS[2], 'g:policy')
local failed = count(STATE.failure) + count(STATE.lost)
-- The fan-in step ('g:then': absent, 'waiting', then 'running' once started, by exactly one write).
local then_step = redis.call('HGET', KEYS[2], 'g:then')
local chain = redis.call('HGET', KEYS[2], 'g:kind') == 'chain'
local cancelled = redis.call('EXISTS', KEYS[6]) == 1
local final, start_then, start = nil, false, ''
if then_ended and then_step == 'running' then  -- (a step cancelled before it started decides nothing)
  final = then_ended == STATE.success and STATE.success or then_ended == STATE.cancelled and STATE.cancelled
    or STATE.failure
elseif ended >= parts then
  if cancelled then final = STATE.cancelled
  elseif count(STATE.success) == parts then
    if then_step == 'waiting' then start_then = true  -- this write, and no other, starts it
    elseif then_step ~= 'running' then final = STATE.success end
  elseif failed > 0 then final = STATE.failure
  else final = STATE.cancelled end
elseif policy == 'fail_fast' and (failed > 0 or count(STATE.cancelled) > 0) then
  final = STATE.failure
end
if start_then then
  redis.call('HSET', KEYS[2], 'g:then', 'running')
  start = redis.call('HGET', KEYS[2], 'g:thenname')
elseif chain and not final and not cancelled and step_ended ~= nil and step_ended + 1 < parts
    and (step_state == STATE.success or policy == 'continue') then
  -- A chain: the step after the one this write ended starts, once (this transition happens once).
  local following = ARGV[2] .. '.' .. (step_ended + 1)
  if cjson.decode(redis.call('HGET', KEYS[3], following)).s == STATE.queued then start = following end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[2], 'g:pub') or '0')
local interval = tonumber(ARGV[3])
if not final and start == '' and now - last < interval then
  if changed then redis.call('HSET', KEYS[2], 'g:dirty', '1') end
  if redis.call('HGET', KEYS[2], 'g:dirty') then return {2, last + interval - now} end
  return {0}
end
if not final and not changed and not redis.call('HGET', KEYS[2], 'g:dirty') then return {0} end
local record = cjson.decode(redis.call('HGET', KEYS[2], 'rec'))
local sumw = tonumber(redis.call('HGET', KEYS[2], 'g:sumw'))
local wp = tonumber(redis.call('HGET', KEYS[2], 'g:wp'))
local percent = math.floor(math.max(0, math.min(100, wp / sumw)) * 100 + 0.5) / 100
local counts = {}
for _, state in ipairs(STATES) do counts[state] = count(state) end
record.group.counts = counts
record.percent = percent
-- rate (percent a second, smoothed as the writer smooths a task's) and eta, from the published percents
local sampled_at = tonumber(redis.call('HGET', KEYS[2], 'g:st') or '0')
local sampled = tonumber(redis.call('HGET', KEYS[2], 'g:sp') or '0')
if sampled_at == 0 then
  redis.call('HSET', KEYS[2], 'g:st', now, 'g:sp', percent)
elseif now - sampled_at >= 200 then
  local instant = math.max(0, (percent - sampled) * 1000 / (now - sampled_at))
  local rate = type(record.rate) == 'number' and (0.3 * instant + 0.7 * record.rate) or instant
  record.rate = math.floor(rate * 10000 + 0.5) / 10000
  redis.call('HSET', KEYS[2], 'g:st', now, 'g:sp', percent)
end
if type(record.rate) == 'number' and record.rate > 0 then
  record.eta = math.floor((100 - percent) / record.rate * 10 + 0.5) / 10
end
record.updated_at = now / 1000
local thenname = redis.call('HGET', KEYS[2], 'g:thenname')
local then_entry = thenname and cjson.decode(redis.call('HGET', KEYS[3], thenname)) or nil
if record.stages ~= nil and record.stages ~= cjson.null then  -- a chain, or a group with a fan-in step
  local STAGE_OF = {[STATE.queued] = 'pending', [STATE.running] = 'active', [STATE.success] = 'done',
    [STATE.failure] = 'failed', [STATE.lost] = 'failed', [STATE.cancelled] = STATE.cancelled}
  local stages = record.stages
  record.stage = cjson.null
  if chain then  -- each step is a stage: its state and its own bar
    for index = 1, parts do
      local entry = cjson.decode(redis.call('HGET', KEYS[3], ARGV[2] .. '.' .. (index - 1)))
      stages[index].state = STAGE_OF[entry.s]
      stages[index].percent = entry.s == STATE.queued and cjson.null or entry.p
      if entry.s == STATE.running then record.stage = stages[index].name end
    end
  else  -- a group with a fan-in step: its parts together are the first stage
    local first, weight = stages[1], tonumber(then_entry.w)
    first.percent = math.floor((wp - weight * then_entry.p) / (sumw - weight) * 100 + 0.5) / 100
    if count(STATE.success) == parts then first.state = 'done'
    elseif final then first.state = final == STATE.cancelled and STATE.cancelled or 'failed'
    elseif counts[STATE.queued] < parts then first.state, record.stage = 'active', first.name
    else first.state = 'pending' end
  end
  if then_entry then
    local last = stages[#stages]
    last.state = STAGE_OF[then_entry.s]
    last.percent = then_entry.s == STATE.queued and cjson.null or then_entry.p
    if start_then or then_entry.s == STATE.running then last.state, record.stage = 'active', last.name end
  end
  if final then  -- steps that will never run
    for _, stage in ipairs(stages) do
      if stage.state == 'pending' or stage.state == 'active' then stage.state = STATE.cancelled end
    end
  end
end
if final then
  record.state, record.finished_at, record.eta, record.stage = final, now / 1000, cjson.null, cjson.null
  if final == STATE.success then record.percent = 100 end
  if then_ended and then_error ~= nil and then_error ~= cjson.null then record.error = then_error
  elseif final == STATE.failure and failed > 0 then record.error = failed .. ' of ' .. parts .. ' parts failed.'
  elseif final == STATE.failure then record.error = PART_CANCELLED end
elseif counts[STATE.queued] < parts then
  record.state = STATE.running
  if record.started_at == cjson.null or record.started_at == nil then record.started_at = now / 1000 end
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
record.seq = seq
local out = cjson.encode(record)
redis.call('HSET', KEYS[2], 'rec', out, 'state', record.state, 'g:pub', now)
redis.call('HDEL', KEYS[2], 'g:dirty')
local ttl = final and ARGV[4] or ARGV[5]
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
PUBLISHED(ARGV, 9, seq, record.state, out)
local result = {1, out, final or '', start}
if final then
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    if redis.call('GET', key) == ARGV[2] then redis.call('DEL', key) end
  end
  redis.call('DEL', KEYS[4])
  redis.call('ZREM', KEYS[5], ARGV[2])
  -- The parts not final yet stop at their next update (queued ones: the caller revokes them).
  local all = redis.call('HGETALL', KEYS[3])
  for i = 1, #all, 2 do
    local state = cjson.decode(all[i + 1]).s
    if not FINAL[state] then
      redis.call('SET', ARGV[6] .. all[i], '1', 'PX', ARGV[7])
      table.insert(result, all[i])
      table.insert(result, state)
    end
  end
end
return result
