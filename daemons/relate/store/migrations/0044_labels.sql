-- User labels (relate/services/labels.py owns the rules): a name and a colour for the apps, and the IMAP
-- keyword that is the label on a message (a message has the label when its flags hold the keyword), so
-- mail clients see labels as keywords (Thunderbird as tags) and set them too. The keyword is chosen when
-- the label is made and never changes: renaming a label changes its name only.
CREATE TABLE labels (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text NOT NULL,
    color       text NOT NULL,
    keyword     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX labels_user_name_idx ON labels (user_id, lower(name));
CREATE UNIQUE INDEX labels_user_keyword_idx ON labels (user_id, lower(keyword));
