# Arguments that would otherwise be swallowed in silence. Methods take `...` because
# their generics do, so predict(fit, se.fit = TRUE) would quietly return no standard
# errors; every method passes its `...` here instead, and an argument it does not use
# is an error that names it.

# Stops when `...` holds an argument other than those in `allowed`. `call` names the
# function in the message ("predict()"), `help` its help topic; `hints` (a named character
# vector) says, for arguments users often type, why they are not taken and what to do.
refuse_unknown_arguments <- function(call, ..., allowed = character(), hints = character(),
                                     help = NULL) {
  if (...length() == 0L) return(invisible())
  given <- ...names()
  if (is.null(given)) given <- rep("", ...length())
  unknown <- given[!given %in% allowed | given == ""]
  if (length(unknown) == 0L) return(invisible())
  labels <- ifelse(unknown == "", "an unnamed argument", paste0("`", unknown, "`"))
  hinted <- intersect(unknown, names(hints))
  stop(sprintf(
    "%s does not take %s%s",
    call, paste(unique(labels), collapse = ", "),
    if (length(hinted)) {
      paste0(": ", paste(hints[hinted], collapse = "; "))
    } else if (!is.null(help)) {
      sprintf(" (see ?%s for the arguments it takes)", help)
    } else {
      ""
    }
  ), call. = FALSE)
}
