"""The Lua scripts of the Redis store: each runs atomically inside Redis.

A script is one step that must not be seen half done by another Runtime
(receive with its redrive, retire with its outbox, a checkpoint with its
failure record, a concurrency slot against the limits). Keys are built from
the prefix in ARGV[1] (one Redis server, not Redis Cluster: a script may
touch several queues). Floats travel as strings: a Lua number returned to
Redis is truncated to an integer.
"""

from __future__ import annotations

# Appends a queue message (also the outbox's messages). A message is a hash;
# two sorted sets order it by visibility time and by sent time (retention).
# Members are zero-padded sequence numbers, so equal scores keep send order.
_ADD_MESSAGE = """
local function add_message(p, queue, id, body, attrs, sender, sent_at)
  local seq = string.format('%016d', redis.call('INCR', p .. 'msgseq'))
  local qk = p .. 'q:' .. queue
  redis.call('HSET', qk .. ':m:' .. seq, 'id', id, 'body', body, 'attrs', attrs,
             'sender', sender, 'sent_at', sent_at, 'count', 0, 'first', '', 'handle', '')
  redis.call('ZADD', qk .. ':vis', sent_at, seq)
  redis.call('ZADD', qk .. ':sent', sent_at, seq)
end
"""

# Stores an event and appends its id to the ready stream that the delivery
# consumer group reads; ev:all indexes every stored event by accept time.
_ADD_EVENT = """
local function add_event(p, fn, rid, payload, accepted_at)
  local id = redis.call('INCR', p .. 'ev:next')
  local entry = redis.call('XADD', p .. 'ev:ready', '*', 'id', id)
  redis.call('HSET', p .. 'ev:' .. id, 'function', fn, 'request_id', rid, 'payload', payload,
             'accepted_at', accepted_at, 'due_at', accepted_at, 'attempts', 0, 'throttles', 0,
             'entry', entry)
  redis.call('ZADD', p .. 'ev:all', accepted_at, id)
  return id
end
"""

# ARGV from index i: message count, 6 fields each, event count, 4 fields each.
_APPLY_OUTBOX = _ADD_MESSAGE + _ADD_EVENT + """
local function apply_outbox(p, i)
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    add_message(p, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5])
    i = i + 6
  end
  local ids = {}
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    table.insert(ids, add_event(p, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]))
    i = i + 4
  end
  return ids
end
"""

# ARGV: prefix, then an outbox.
SEND_MESSAGES = _APPLY_OUTBOX + "return apply_outbox(ARGV[1], 2)"

# ARGV: prefix, function, request id, payload, accepted_at.
ADD_EVENT = _ADD_EVENT + "return add_event(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])"

# ARGV: prefix, queue, now, visible_at, max messages, max receive count ('' for
# none), dead-letter queue ('' for none), then one fresh receipt handle per
# message that may be returned. Returns per message: seq, handle, count,
# first received, id, body, attrs, sender, sent_at.
RECEIVE = """
local p, queue = ARGV[1], ARGV[2]
local now, visible_at, wanted = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local max_count, dlq = ARGV[6], ARGV[7]
local next_handle = 8
local qk = p .. 'q:' .. queue
local out, taken, still_visible = {}, {}, 0
while #out < wanted do
  -- Received messages whose new visibility is still <= now stay in range:
  -- read that many more and skip them.
  local seqs = redis.call('ZRANGEBYSCORE', qk .. ':vis', '-inf', now, 'LIMIT', 0,
                          wanted - #out + still_visible)
  local fresh = 0
  for _, seq in ipairs(seqs) do
    if #out >= wanted then break end
    if not taken[seq] then
      fresh = fresh + 1
      taken[seq] = true
      local mk = qk .. ':m:' .. seq
      local count = tonumber(redis.call('HGET', mk, 'count'))
      if max_count ~= '' and dlq ~= '' and count >= tonumber(max_count) then
        -- Redrive: the message moves, keeping its id, body and sent time.
        local old = redis.call('HGET', mk, 'handle')
        if old ~= '' then redis.call('HDEL', qk .. ':handles', old) end
        local sent = redis.call('ZSCORE', qk .. ':sent', seq)
        redis.call('ZREM', qk .. ':vis', seq)
        redis.call('ZREM', qk .. ':sent', seq)
        local dk = p .. 'q:' .. dlq
        redis.call('RENAME', mk, dk .. ':m:' .. seq)
        redis.call('HSET', dk .. ':m:' .. seq, 'count', 0, 'first', '', 'handle', '')
        redis.call('ZADD', dk .. ':vis', now, seq)
        redis.call('ZADD', dk .. ':sent', sent, seq)
      else
        local handle = ARGV[next_handle]
        next_handle = next_handle + 1
        local old = redis.call('HGET', mk, 'handle')
        if old ~= '' then redis.call('HDEL', qk .. ':handles', old) end
        local first = redis.call('HGET', mk, 'first')
        if first == '' then first = ARGV[3] end
        redis.call('HSET', mk, 'count', count + 1, 'first', first, 'handle', handle)
        redis.call('HSET', qk .. ':handles', handle, seq)
        redis.call('ZADD', qk .. ':vis', visible_at, seq)
        if tonumber(visible_at) <= now then still_visible = still_visible + 1 end
        local f = redis.call('HMGET', mk, 'id', 'body', 'attrs', 'sender', 'sent_at')
        table.insert(out, {seq, handle, count + 1, first, f[1], f[2], f[3], f[4], f[5]})
      end
    end
  end
  if fresh == 0 then break end
end
return out
"""

# ARGV: prefix, queue, receipt handles...; returns how many messages went.
DELETE_MESSAGES = """
local qk = ARGV[1] .. 'q:' .. ARGV[2]
local n = 0
for i = 3, #ARGV do
  local seq = redis.call('HGET', qk .. ':handles', ARGV[i])
  if seq then
    redis.call('HDEL', qk .. ':handles', ARGV[i])
    redis.call('DEL', qk .. ':m:' .. seq)
    redis.call('ZREM', qk .. ':vis', seq)
    redis.call('ZREM', qk .. ':sent', seq)
    n = n + 1
  end
end
return n
"""

# ARGV: prefix, queue, receipt handle, visible_at; 1 if the handle is current.
CHANGE_VISIBILITY = """
local qk = ARGV[1] .. 'q:' .. ARGV[2]
local seq = redis.call('HGET', qk .. ':handles', ARGV[3])
if not seq then return 0 end
redis.call('ZADD', qk .. ':vis', ARGV[4], seq)
return 1
"""

# ARGV: prefix, queue, sent_before ('+inf' with the queue record removed: delete).
EXPIRE_MESSAGES = """
local qk = ARGV[1] .. 'q:' .. ARGV[2]
local seqs = redis.call('ZRANGEBYSCORE', qk .. ':sent', '-inf', '(' .. ARGV[3])
for _, seq in ipairs(seqs) do
  local handle = redis.call('HGET', qk .. ':m:' .. seq, 'handle')
  if handle and handle ~= '' then redis.call('HDEL', qk .. ':handles', handle) end
  redis.call('DEL', qk .. ':m:' .. seq)
  redis.call('ZREM', qk .. ':vis', seq)
  redis.call('ZREM', qk .. ':sent', seq)
end
return #seqs
"""

# ARGV: prefix, queue; deletes the queue's record and every message.
DELETE_QUEUE = """
local qk = ARGV[1] .. 'q:' .. ARGV[2]
for _, seq in ipairs(redis.call('ZRANGE', qk .. ':sent', 0, -1)) do
  redis.call('DEL', qk .. ':m:' .. seq)
end
redis.call('DEL', qk .. ':vis', qk .. ':sent', qk .. ':handles')
return redis.call('HDEL', ARGV[1] .. 'queues', ARGV[2])
"""

# ARGV: prefix, stream, shard, partition key, lane key, data, arrived_at.
# Sequence numbers grow per stream; each shard is a Redis stream whose entry
# ids are those numbers, so XRANGE reads a shard in order.
PUT_RECORD = """
local p, name = ARGV[1], ARGV[2]
if redis.call('HEXISTS', p .. 'streams', name) == 0 then return -1 end
local seq = redis.call('INCR', p .. 's:' .. name .. ':next')
redis.call('XADD', p .. 's:' .. name .. ':' .. ARGV[3], seq .. '-0',
           'k', ARGV[4], 'l', ARGV[5], 'd', ARGV[6], 'a', ARGV[7])
redis.call('ZADD', p .. 's:' .. name .. ':arrived', ARGV[7], ARGV[3] .. ':' .. seq)
return seq
"""

# ARGV: prefix, stream, arrived_before.
EXPIRE_RECORDS = """
local sk = ARGV[1] .. 's:' .. ARGV[2]
local gone = redis.call('ZRANGEBYSCORE', sk .. ':arrived', '-inf', '(' .. ARGV[3])
for _, member in ipairs(gone) do
  local shard, seq = string.match(member, '^(%d+):(%d+)$')
  redis.call('XDEL', sk .. ':' .. shard, seq .. '-0')
end
redis.call('ZREMRANGEBYSCORE', sk .. ':arrived', '-inf', '(' .. ARGV[3])
return #gone
"""

# ARGV: prefix, stream, shard count; deletes the record, counter and shards.
DELETE_STREAM = """
local sk = ARGV[1] .. 's:' .. ARGV[2]
for shard = 0, tonumber(ARGV[3]) - 1 do redis.call('DEL', sk .. ':' .. shard) end
redis.call('DEL', sk .. ':next', sk .. ':arrived')
return redis.call('HDEL', ARGV[1] .. 'streams', ARGV[2])
"""

# ARGV: prefix, event id, then an outbox. The event leaves the ready stream
# (acknowledged and deleted) and every index with its outbox; an event another
# consumer already retired writes no outbox again.
RETIRE_EVENT = _APPLY_OUTBOX + """
local p, id = ARGV[1], ARGV[2]
local k = p .. 'ev:' .. id
if redis.call('EXISTS', k) == 0 then return {} end
local entry = redis.call('HGET', k, 'entry')
if entry ~= '' then
  redis.call('XACK', p .. 'ev:ready', 'deliverers', entry)
  redis.call('XDEL', p .. 'ev:ready', entry)
end
redis.call('DEL', k)
redis.call('ZREM', p .. 'ev:delayed', id)
redis.call('ZREM', p .. 'ev:all', id)
return apply_outbox(p, 3)
"""

# ARGV: prefix, event id, attempts, throttles, due_at. The event leaves the
# ready stream for the delayed set; PROMOTE_EVENTS puts it back when due.
RESCHEDULE_EVENT = """
local p, id = ARGV[1], ARGV[2]
local k = p .. 'ev:' .. id
if redis.call('EXISTS', k) == 0 then return 0 end
local entry = redis.call('HGET', k, 'entry')
if entry ~= '' then
  redis.call('XACK', p .. 'ev:ready', 'deliverers', entry)
  redis.call('XDEL', p .. 'ev:ready', entry)
end
redis.call('HSET', k, 'attempts', ARGV[3], 'throttles', ARGV[4], 'due_at', ARGV[5], 'entry', '')
redis.call('ZADD', p .. 'ev:delayed', ARGV[5], id)
return 1
"""

# ARGV: prefix, now, limit; moves due events from the delayed set to the
# ready stream (a move, in one step: never in both, never in neither).
PROMOTE_EVENTS = """
local p = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', p .. 'ev:delayed', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  redis.call('ZREM', p .. 'ev:delayed', id)
  if redis.call('EXISTS', p .. 'ev:' .. id) == 1 then
    local entry = redis.call('XADD', p .. 'ev:ready', '*', 'id', id)
    redis.call('HSET', p .. 'ev:' .. id, 'entry', entry)
  end
end
return #ids
"""

# ARGV: prefix, uuid, record json; a new mapping takes the next creation rank.
PUT_MAPPING = """
local p = ARGV[1]
if not redis.call('ZSCORE', p .. 'mappings:order', ARGV[2]) then
  redis.call('ZADD', p .. 'mappings:order', redis.call('INCR', p .. 'mappings:created'), ARGV[2])
end
redis.call('HSET', p .. 'mappings', ARGV[2], ARGV[3])
return 1
"""

# ARGV: prefix, uuid, "shard:lane", sequence, lease key ('' for none), lease
# owner, then an outbox. With a lease key, the checkpoint moves only while
# its owner still holds the lease (a fence against a paused former holder).
ADVANCE_CHECKPOINT = _APPLY_OUTBOX + """
local p = ARGV[1]
if ARGV[5] ~= '' and redis.call('GET', p .. 'lease:' .. ARGV[5]) ~= ARGV[6] then
  return redis.error_reply('LEASELOST lease ' .. ARGV[5] .. ' is no longer held')
end
redis.call('HSET', p .. 'cp:' .. ARGV[2], ARGV[3], ARGV[4])
return apply_outbox(p, 7)
"""

# ARGV: prefix, key, owner, ttl ms; 1 when the owner holds (took or renewed) it.
HOLD_LEASE = """
local k = ARGV[1] .. 'lease:' .. ARGV[2]
local holder = redis.call('GET', k)
if holder and holder ~= ARGV[3] then return 0 end
redis.call('SET', k, ARGV[3], 'PX', ARGV[4])
return 1
"""

# ARGV: prefix, key, owner.
RELEASE_LEASE = """
local k = ARGV[1] .. 'lease:' .. ARGV[2]
if redis.call('GET', k) == ARGV[3] then return redis.call('DEL', k) end
return 0
"""

# Concurrency slots shared by every Runtime on this Redis. A slot is a member
# of two sorted sets (the function's, and the unreserved pool's when the
# function has no reservation) scored by its lease expiry: a Runtime that dies
# stops renewing, and its slots expire.
# ARGV: prefix, function, slot id, now, expiry, account limit.
# Returns '' on success, else the throttle reason's key: 'reserved' or 'account'.
ACQUIRE_SLOT = """
local p, fn, slot, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local fk, uk = p .. 'slots:' .. fn, p .. 'slots:unreserved'
redis.call('ZREMRANGEBYSCORE', fk, '-inf', '(' .. now)
redis.call('ZREMRANGEBYSCORE', uk, '-inf', '(' .. now)
local reserved_total, mine = 0, nil
local all = redis.call('HGETALL', p .. 'settings:concurrency')
for i = 1, #all, 2 do
  local n = cjson.decode(all[i + 1])['ReservedConcurrentExecutions']
  reserved_total = reserved_total + n
  if all[i] == fn then mine = n end
end
if mine ~= nil then
  if redis.call('ZCARD', fk) >= mine then return 'reserved' end
else
  if redis.call('ZCARD', uk) >= tonumber(ARGV[6]) - reserved_total then return 'account' end
  redis.call('ZADD', uk, ARGV[5], slot)
end
redis.call('ZADD', fk, ARGV[5], slot)
return ''
"""

# ARGV: prefix, function, slot id.
RELEASE_SLOT = """
redis.call('ZREM', ARGV[1] .. 'slots:' .. ARGV[2], ARGV[3])
redis.call('ZREM', ARGV[1] .. 'slots:unreserved', ARGV[3])
return 1
"""

# ARGV: prefix, expiry, then (function, slot id) pairs; renews live slots.
RENEW_SLOTS = """
for i = 3, #ARGV, 2 do
  local fk = ARGV[1] .. 'slots:' .. ARGV[i]
  if redis.call('ZSCORE', fk, ARGV[i + 1]) then redis.call('ZADD', fk, ARGV[2], ARGV[i + 1]) end
  local uk = ARGV[1] .. 'slots:unreserved'
  if redis.call('ZSCORE', uk, ARGV[i + 1]) then redis.call('ZADD', uk, ARGV[2], ARGV[i + 1]) end
end
return 1
"""

# ARGV: prefix, then (event id, entry id) pairs: events a closing Runtime
# claimed but will not deliver go back to the ready stream for the others.
RELEASE_EVENTS = """
local p = ARGV[1]
local ready = p .. 'ev:ready'
for i = 2, #ARGV, 2 do
  local k = p .. 'ev:' .. ARGV[i]
  if redis.call('HGET', k, 'entry') == ARGV[i + 1] then
    redis.call('XACK', ready, 'deliverers', ARGV[i + 1])
    redis.call('XDEL', ready, ARGV[i + 1])
    redis.call('HSET', k, 'entry', redis.call('XADD', ready, '*', 'id', ARGV[i]))
  end
end
return 1
"""

# ARGV: prefix, idle ms, consumer to forget now ('' for none). Forgets the
# group's consumers that hold no pending event and were idle that long (dead
# Runtimes, once their events were reclaimed), and the named one if it holds
# none. Harmless to a live consumer: its next read creates it again.
FORGET_CONSUMERS = """
local ready = ARGV[1] .. 'ev:ready'
local forgotten = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', ready, 'deliverers')) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['pending'] == 0 and (info['idle'] >= tonumber(ARGV[2]) or info['name'] == ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', ready, 'deliverers', info['name'])
    forgotten = forgotten + 1
  end
end
return forgotten
"""
