-- "Unique regardless of case" means ASCII letters: A-Z equal a-z, nothing more, whatever locale
-- the database was created with. Plain lower() follows the database's LC_CTYPE: under the
-- official image's en_US.utf8 it also folds É to é, under C it does not, so the same two
-- addresses clashed in one deployment and not in another, and the in-memory store (ASCII)
-- disagreed with both. lower() under the C collation folds exactly A-Z.
DROP INDEX users_email_lower_key;
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email COLLATE "C"));
