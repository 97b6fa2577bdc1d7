-- Moon's script sandbox, run once in each new Lua state before any user code.
--
-- It receives the real globals table `G`, the `redis` library table `R` (its Rust functions
-- already in it; `call`, `pcall` and `setresp` are put there by each run, as they reach that
-- run's host) and `error_text`, which turns an error raised by a Rust function into its Redis
-- text. It returns the environment scripts see: a read-only view of G.
--
-- As in Redis 7: no dofile, loadfile, print, io, os, package or debug; no bytecode; globals and
-- library tables cannot be changed ("Attempt to modify a readonly table"); reading a global
-- that does not exist is an error; pcall hands back a redis error's text rather than its
-- table.

local G, R, error_text_of, spawn, forget, passing, MARK = ...

local error, type, tostring, select, unpack = error, type, tostring, select, unpack
local setmetatable, rawset, pcall, loadstring = setmetatable, rawset, pcall, loadstring

-- Also gone, unlike Redis (whose Lua is patched to make tables truly read-only): newproxy
-- (a userdata's __gc would run an attacker's code inside a later script, or kill the process
-- from the collector), getfenv and setfenv (they reach the real globals through any C
-- function, and the prelude's functions).
for _, name in ipairs({ "dofile", "loadfile", "print", "module", "require", "package", "io", "os",
    "debug", "newproxy", "getfenv", "setfenv" }) do
    G[name] = nil
end

local readonly_tables = setmetatable({}, { __mode = "k" })

local function modify_error()
    error("Attempt to modify a readonly table", 2)
end

-- A read-only view of `t`.
local function readonly(t)
    local view = setmetatable({}, { __index = t, __newindex = modify_error, __metatable = false })
    readonly_tables[view] = true
    return view
end

-- Redis's error text from "-CODE message" (luaPushErrorBuff): the code and the message, its
-- line ends trimmed; "ERR" when there is no code.
local function error_text(e)
    local space = e:find(" ", 1, true)
    local code, msg
    if space then
        code, msg = e:sub(2, space - 1), e:sub(space + 1)
    else
        code, msg = "ERR", e:sub(2)
    end
    msg = (msg:gsub("^[\r\n]+", ""))
    msg = (msg:gsub("[\r\n]+$", ""))
    return code .. " " .. msg
end

local function pack(...)
    return { n = select("#", ...), ... }
end

R.error_reply = function(...)
    local e = ...
    if select("#", ...) ~= 1 or type(e) ~= "string" then
        return { err = "ERR wrong number or type of arguments" }
    end
    if e:sub(1, 1) ~= "-" then
        e = "-" .. e
    end
    return { err = error_text(e) }
end

R.status_reply = function(...)
    local s = ...
    if select("#", ...) ~= 1 or type(s) ~= "string" then
        return { err = "ERR wrong number or type of arguments" }
    end
    return { ok = s }
end

-- Effects are always what is logged (Redis 7's only mode): these only check their argument.
R.set_repl = function(...)
    local flags = ...
    if select("#", ...) ~= 1 then
        error({ err = "ERR redis.set_repl() requires one argument." })
    end
    if type(flags) ~= "number" or flags < 0 or flags > 3 then
        error({ err = "ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE." })
    end
end
R.replicate_commands = function() return true end
R.breakpoint = function() return false end
R.debug = function() end

R.LOG_DEBUG, R.LOG_VERBOSE, R.LOG_NOTICE, R.LOG_WARNING = 0, 1, 2, 3
R.REPL_NONE, R.REPL_AOF, R.REPL_SLAVE, R.REPL_REPLICA, R.REPL_ALL = 0, 1, 2, 2, 3

-- pcall runs its function as a coroutine of the run (`spawn`, when the function is Lua's and
-- the run may pause here), so that a busy run can pause inside it too (see watch.rs): a pause
-- (the hook's yield, `passing(co)`) is passed up to the run, and the coroutine resumed after it.
local co_resume, co_status, co_yield = coroutine.resume, coroutine.status, coroutine.yield

local function settle(co, ok, ...)
    if ok and co_status(co) == "suspended" and passing(co) then
        co_yield()
        return settle(co, co_resume(co))
    end
    forget(co)
    return ok, ...
end

local function protected(f, ...)
    local co = spawn(f)
    if co == nil then
        return pcall(f, ...)
    end
    return settle(co, co_resume(co, ...))
end

-- pcall as Redis 7 has it: a redis error caught is its text, not its table.
G.pcall = function(f, ...)
    local r = pack(protected(f, ...))
    if not r[1] and type(r[2]) == "table" and type(r[2].err) == "string" then
        r[2] = r[2].err
    elseif not r[1] and type(r[2]) == "string" and r[2]:sub(1, #MARK) == MARK then
        -- Raised with Redis's text (error({err = ...}), SCRIPT KILL): that text.
        r[2] = r[2]:sub(#MARK + 1)
    elseif not r[1] and type(r[2]) == "userdata" then
        -- Raised by redis.call (a Rust function): its Redis text.
        r[2] = error_text_of(r[2])
    end
    return unpack(r, 1, r.n)
end

G.rawset = function(t, k, v)
    if readonly_tables[t] then
        modify_error()
    end
    return rawset(t, k, v)
end

-- No bytecode: a binary chunk can break out of any sandbox.
G.loadstring = function(s, name)
    if type(s) == "string" and s:byte(1) == 27 then
        return nil, "attempt to load a binary chunk"
    end
    return loadstring(s, name)
end
G.load = function(f, name)
    if type(f) ~= "function" then
        return G.loadstring(f, name)
    end
    local parts = {}
    while true do
        local piece = f()
        if piece == nil or piece == "" then
            break
        end
        if type(piece) ~= "string" then
            return nil, "reader function must return a string"
        end
        parts[#parts + 1] = piece
    end
    return G.loadstring(table.concat(parts), name)
end

-- Lua 5.1's pattern matcher recurses once per optional item or capture of a pattern, with no
-- bound: a pattern of 300,000 `a?` overflows the thread's stack. Patterns are bounded here.
local MAX_PATTERN = 4096
for _, name in ipairs({ "find", "match", "gmatch", "gsub" }) do
    local f = G.string[name]
    G.string[name] = function(s, pattern, ...)
        if type(pattern) == "string" and #pattern > MAX_PATTERN then
            error("pattern too long (Moon accepts " .. MAX_PATTERN .. " bytes)", 2)
        end
        return f(s, pattern, ...)
    end
end

for _, name in ipairs({ "string", "math", "table", "coroutine", "bit", "cjson", "cmsgpack", "struct" }) do
    G[name] = readonly(G[name])
end
G.redis = readonly(R)

-- Strings' methods ("x"):upper() keep working; their metatable cannot be reached to change it.
getmetatable("").__metatable = false

-- Reading a global that does not exist is an error, as in Redis.
setmetatable(G, {
    __index = function(_, name)
        error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
    end,
})

-- setmetatable on a read-only table (the globals, a library) is Redis's error, not Lua's.
G.setmetatable = function(t, mt)
    if readonly_tables[t] then
        error("Attempt to modify a readonly table", 2)
    end
    return setmetatable(t, mt)
end

-- getmetatable(_G) gives a read-only stand-in whose __index is a read-only view of the
-- globals: code that reaches for the real globals through it gets Redis's error.
local shown = readonly({ __index = readonly(G), __newindex = modify_error })
local env = setmetatable({}, { __index = G, __newindex = modify_error, __metatable = shown })
readonly_tables[env] = true
G._G = env

-- What a library's code sees while FUNCTION LOAD runs it, as in Redis: a `redis` table with
-- only `api` in it (register_function, log, the LOG_* levels, the version), and nothing else
-- — reading anything more, there or among the globals, is an error. The engine points `env`
-- at these globals for the load and back at G after it, so the functions a library defines
-- see the scripts' globals when they are called.
local function load_globals(api)
    local missing = {
        __index = function(_, name)
            error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
        end,
    }
    setmetatable(api, missing)
    local redis = setmetatable({}, { __index = api, __newindex = modify_error, __metatable = false })
    readonly_tables[redis] = true
    return setmetatable({ redis = redis }, missing)
end

return env, load_globals
