# shellcheck shell=bash
# The stack's three secrets, as files, the same on every deploy path. Source it; do not run it.
#
#   db_password     the PostgreSQL password (POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE; required)
#   redis_password  Redis's requirepass (REDIS_PASSWORD_FILE, else generated once and kept)
#   api_tokens      the API's bearer tokens, one per line (API_TOKEN_FILE, else one generated
#                   once and kept)
#
# In the containers they are /run/secrets/NAME (as Docker secrets are), bind-mounted read-only;
# `docker inspect` shows their paths, never their values. A file is rewritten in place and only
# when its content changes: a running container keeps the inode it bind-mounted, so an in-place
# write reaches it (the app re-reads api_tokens by itself), and an unchanged file changes nothing.

# shellcheck disable=SC2034 # read by the scripts that source this file
SECRET_NAMES=(db_password redis_password api_tokens)

# new_secret : 32 random bytes as 64 hex digits (safe in every config syntax involved).
new_secret() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }

# secret_source NAME KEPT-FILE : the wanted content of secret NAME: from the user's variable or
# file, else the kept file's, else a new one (redis_password, api_tokens). Fails if none.
secret_source() {
    local name=$1 kept=$2 value
    case $name in
        db_password) secret_value POSTGRES_PASSWORD ;;
        redis_password)
            if [[ -n ${REDIS_PASSWORD_FILE:-} ]]; then value=$(secret_value REDIS_PASSWORD) || return 1
            elif [[ -s $kept ]]; then value=$(cat "$kept")
            else value=$(new_secret); fi
            # It is written into a redis.conf line between double quotes.
            [[ -n $value && $value != *[\"\\[:space:]]* ]] ||
                die "the Redis password must be non-empty, without quotes, backslashes or spaces"
            printf '%s' "$value"
            ;;
        api_tokens)
            if [[ -n ${API_TOKEN_FILE:-} ]]; then
                [[ -r $API_TOKEN_FILE ]] || die "API_TOKEN_FILE=$API_TOKEN_FILE is not a readable file"
                cat "$API_TOKEN_FILE"
            elif [[ -s $kept ]]; then cat "$kept"
            else printf '%s\n' "$(new_secret)"; fi
            ;;
        *) die "unknown secret $name" ;;
    esac
}

# write_secret FILE OWNER MODE : FILE gets stdin, in place, only if different; prints "changed"
# or "kept". OWNER may be empty (keep the caller's).
write_secret() {
    local file=$1 owner=$2 mode=$3 new
    new=$(mktemp "$(dirname "$file")/.new.XXXXXX")
    cat >"$new"
    if [[ -f $file ]] && cmp -s "$new" "$file"; then
        rm -f "$new"
        echo kept
    elif [[ -f $file ]]; then
        chmod u+w "$file"
        cat "$new" >"$file"
        rm -f "$new"
        echo changed
    else
        mv "$new" "$file"
        echo changed
    fi
    [[ -z $owner ]] || chown "$owner" "$file"
    chmod "$mode" "$file"
}

# first_token FILE : the first token in a token file (for printing how to call the API).
first_token() { grep -v '^[[:space:]]*\(#\|$\)' "$1" | head -n 1 | tr -d '[:space:]'; }
