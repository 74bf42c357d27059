"""Teacher pairs ``(z, Φ(z))``: the store on disk (:mod:`.store`) and its generation (:mod:`.generate`)."""
