-- wrk script: one visitor per connection, keeping its session cookie.
--
-- Run with as many threads as connections (-t N -c N), so each thread's Lua
-- state is one connection's client: it sends no cookie at first (or the
-- fixed cookie given as the second argument, for baselines), keeps the
-- cookie of every Set-Cookie it receives (an emptied cookie is dropped), and
-- checks every response body "n=<counter>;tag=<tag>":
--   mode "inc":  the counter goes up by exactly one per response (from 1);
--   mode "read": the counter stays 0 and the session cookie never changes;
--   both:        the tag (random, set when the session is created) never
--                changes, so a lost and re-created session is caught;
--   mode "none": no check (the baselines).
-- done() prints one BENCH_SUMMARY line and one BENCH_CONN line per connection
-- (id, requests sent, 200 responses, other responses, violations, last
-- counter, tag, cookie, first violation), which loadtest.py parses and
-- verifies against the server.

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "none"
  -- args[2]: a fixed cookie to send from the first request (baselines).
  cookie, tag, detail = args[2] or "", "", ""
  sent, ok, other, bad, last = 0, 0, 0, 0, 0
end

function request()
  sent = sent + 1
  if cookie ~= "" then
    return wrk.format(nil, nil, { Cookie = cookie })
  end
  return wrk.format(nil, nil, {})
end

local function violation(message)
  bad = bad + 1
  if detail == "" then
    detail = message
  end
end

function response(status, headers, body)
  if status ~= 200 then
    other = other + 1
    return
  end
  ok = ok + 1
  for name, value in pairs(headers) do
    if string.lower(name) == "set-cookie" then
      local pair = string.match(value, "^%s*([^;]*)")
      if mode == "read" and cookie ~= "" and pair ~= cookie then
        violation("response " .. ok .. " replaced the session cookie")
      end
      if string.match(pair, "=%s*$") then
        cookie = ""
      else
        cookie = pair
      end
    end
  end
  if mode == "none" then
    return
  end
  local digits, got = string.match(body or "", "^n=(%d+);tag=(%w+)")
  local n = tonumber(digits)
  if tag == "" then
    tag = got or ""
  elseif got ~= tag then
    violation("response " .. ok .. " is another session's (tag " .. tostring(got) .. ", was " .. tag .. ")")
    tag = got or tag
  end
  local expected = 0
  if mode == "inc" then
    expected = last + 1
  end
  if n ~= expected then
    violation("response " .. ok .. ": n=" .. tostring(n) .. ", expected " .. expected)
  end
  if n then
    last = n
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_SUMMARY %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)
  ))
  for _, thread in ipairs(threads) do
    io.write(string.format(
      "BENCH_CONN\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n",
      thread:get("id"), thread:get("sent"), thread:get("ok"), thread:get("other"),
      thread:get("bad"), thread:get("last"), thread:get("tag"), thread:get("cookie"),
      thread:get("detail")
    ))
  end
end
