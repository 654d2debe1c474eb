-- Per-user preferences for the apps (relate/services/preferences.py owns the schema): only the values a
-- user changed are stored; the service fills in the defaults, so a new preference needs no migration.
CREATE TABLE user_preferences (
    user_id     bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    prefs       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(prefs) = 'object'),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
