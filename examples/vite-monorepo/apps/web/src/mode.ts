// Vite replaces process.env.NODE_ENV at build time; the dead branch is
// removed from the bundle, so exactly one marker survives.
export function buildMode(): string {
  if (process.env.NODE_ENV === "production") {
    return "MODE_MARKER_PRODUCTION";
  } else {
    return "MODE_MARKER_DEVELOPMENT";
  }
}
