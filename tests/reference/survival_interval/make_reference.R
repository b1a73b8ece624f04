# Frozen reference for the Turnbull NPMLE of analytics/engines/turnbull.py (tests/test_turnbull.py).
# Input: intervals.csv and intervals_visit.csv beside this script (written by make_data.py): left, right with right
# empty = right-censored, left == right = exact. Run from the repository root:
#   Rscript tests/reference/survival_interval/make_reference.R
# For each data set, written to reference.json under its name:
# 1. survival::survfit(Surv(left, right, type = "interval2") ~ 1): R's Turnbull estimate (time, surv, n_event).
#    Its EM stops when the curve changes by < 5e-5, so it is compared at 1e-4. With exact times it also gives mass
#    to midpoints between an exact time and the next right end (not innermost intervals: the NPMLE's mass there is
#    0, which its EM approaches slowly), so on intervals.csv it is ~3e-4 from the NPMLE; intervals_visit.csv (no
#    exact times) is the like-for-like survfit check.
# 2. The same NPMLE by plain self-consistency iterations (Turnbull 1976) run to 1e-13, written here in base R on the
#    innermost intervals, for a tighter comparison (masses and log-likelihood).
suppressPackageStartupMessages({ library(survival); library(jsonlite) })
dir <- "tests/reference/survival_interval"
reference_for <- function(d) {
  fit <- survfit(Surv(left, right, type = "interval2") ~ 1, data = d)

  # innermost intervals: endpoints sorted with exact points (0) < right ends (1) < open left ends (2) at equal times
  exact <- !is.na(d$right) & d$left == d$right
  right <- ifelse(is.na(d$right), Inf, d$right)
  tt <- c(d$left, right); kk <- c(ifelse(exact, 0, 2), rep(1, nrow(d)))
  o <- order(tt, kk); tt <- tt[o]; kk <- kk[o]
  n2 <- length(tt)
  pair <- kk[-n2] != 1 & kk[-1] == 1
  lo <- tt[-n2][pair]; hi <- tt[-1][pair]; pt <- kk[-n2][pair] == 0
  keep <- !duplicated(cbind(lo, hi, pt)); lo <- lo[keep]; hi <- hi[keep]; pt <- pt[keep]
  A <- sapply(seq_along(lo), function(j) {
    inside <- if (pt[j]) d$left < lo[j] & lo[j] <= right else d$left <= lo[j] & hi[j] <= right
    ifelse(exact, pt[j] & lo[j] == d$left, inside)
  })
  A <- matrix(as.numeric(A), nrow = nrow(d))
  p <- rep(1 / length(lo), length(lo))
  for (it in 1:200000) {
    denom <- as.vector(A %*% p)
    pn <- p * colSums(A / denom) / nrow(d)
    if (max(abs(pn - p)) < 1e-13) { p <- pn; break }
    p <- pn
  }
  loglik <- sum(log(as.vector(A %*% p)))
  list(
    survfit = data.frame(time = fit$time, surv = fit$surv, n_event = fit$n.event),
    innermost = data.frame(lower = lo, upper = ifelse(is.finite(hi), hi, NA), point = pt, mass = p),
    self_consistency_iterations = it, loglik = loglik)
}
out <- list(R = R.version.string, survival = as.character(packageVersion("survival")))
for (name in c("intervals", "intervals_visit")) out[[name]] <- reference_for(read.csv(file.path(dir, paste0(name, ".csv"))))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"), file.path(dir, "reference.json"))
