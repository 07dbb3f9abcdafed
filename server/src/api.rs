//! TODO(owner): being written in this session.
