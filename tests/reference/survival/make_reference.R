# Reference numbers for tests/test_survival_golden.py, from R's survival package.
#
# Run from the repository root:   Rscript tests/reference/survival/make_reference.R
# Writes the input data (lung.csv, veteran.csv, ovarian.csv from R's survival package; small.csv is
# hand-made) and reference.json beside this script. The tests never need R: they read these files.
#
# Conventions (what the Python side must reproduce):
#   * Kaplan-Meier: survfit() defaults -- Greenwood variance, conf.type = "log", conf.int = 0.95.
#     `std_err` is survfit's std.err (standard error of the cumulative hazard, i.e. of -log S).
#   * Median and its CI: print(survfit)/summary(survfit)$table (survival:::survmean: midpoint rule
#     when S(t) = 0.5 over an interval; the CI limits are where the pointwise CI bands reach 0.5).
#   * Milestones: summary(survfit, times = ...); `std_err` there is the standard error of S.
#   * RMST: summary(survfit, rmean = tau)$table (rmean, se(rmean)); the difference between two groups
#     uses the normal approximation with summed variances, as survRM2::rmst2 does.
#   * Log-rank: survdiff(); p from pchisq(lower.tail = FALSE).
#   * Cox: coxph(ties = "efron") (the default); Wald p and exp(coef +/- z se).
#   * PH test: cox.zph(fit) with its defaults (survival >= 3.0: transform = "km", terms = TRUE, global).
suppressPackageStartupMessages({ library(survival); library(jsonlite) })

here <- "tests/reference/survival"
fin <- function(x) { x <- as.numeric(x); x[!is.finite(x)] <- NA; x }

# ---- data ---------------------------------------------------------------------------------------
lung <- survival::lung
lung$event <- as.integer(lung$status == 2)
lung$sex <- factor(lung$sex, levels = 1:2, labels = c("male", "female"))
write.csv(lung, file.path(here, "lung.csv"), row.names = FALSE, na = "")

veteran <- survival::veteran
veteran$event <- as.integer(veteran$status)
veteran$celltype <- as.character(veteran$celltype)
veteran$trt <- factor(veteran$trt, levels = 1:2, labels = c("standard", "test"))
write.csv(veteran, file.path(here, "veteran.csv"), row.names = FALSE, na = "")

ovarian <- survival::ovarian
ovarian$time <- ovarian$futime
ovarian$event <- as.integer(ovarian$fustat)
ovarian$rx <- factor(ovarian$rx, levels = 1:2, labels = c("rx1", "rx2"))
write.csv(ovarian, file.path(here, "ovarian.csv"), row.names = FALSE, na = "")

# Hand-made: events and censorings at time 0, ties of events and censorings at one time, a group
# without events (c), and a group whose survival is exactly 0.5 between days 3 and 5 (d: median 4).
small <- data.frame(
  group = c(rep("a", 10), rep("b", 10), rep("c", 4), rep("d", 6)),
  time  = c(0, 0, 2, 2, 2, 5, 5, 8, 9, 12,   1, 3, 3, 3, 6, 6, 7, 10, 11, 15,   2, 4, 9, 14,
            1, 2, 3, 4, 5, 6),
  event = c(1, 0, 1, 1, 0, 1, 0, 1, 0, 1,    1, 1, 1, 0, 1, 1, 0, 1, 0, 0,      0, 0, 0, 0,
            1, 1, 1, 0, 1, 0),
  x     = c(1.2, 0.3, -0.5, 2.0, 0.1, -1.1, 0.7, 0.0, 1.5, -0.2,
            0.4, -0.8, 1.1, 0.9, -1.4, 0.2, 0.6, -0.3, 1.8, -0.9,
            0.5, 0.0, -0.6, 1.0,   0.3, -0.2, 0.8, -1.0, 0.4, 0.1))
write.csv(small, file.path(here, "small.csv"), row.names = FALSE)

# ---- Kaplan-Meier, medians, milestones, RMST, log-rank ----------------------------------------------
km_case <- function(d, group, milestones, tau, ref = NULL) {
  g <- if (is.null(group)) factor(rep("all", nrow(d))) else factor(d[[group]])
  fit <- survfit(Surv(d$time, d$event) ~ g)
  strata <- if (is.null(fit$strata)) rep(levels(g), length(fit$time)) else
    rep(sub("^g=", "", names(fit$strata)), fit$strata)
  km <- list(); med <- list(); ms <- list(); rm <- list()
  tab <- summary(fit, rmean = tau)$table
  if (is.null(dim(tab))) tab <- matrix(tab, nrow = 1, dimnames = list(levels(g), names(tab)))
  rownames(tab) <- sub("^g=", "", rownames(tab))
  for (lev in levels(g)) {
    i <- strata == lev
    km[[lev]] <- list(time = fit$time[i], n_risk = fit$n.risk[i], n_event = fit$n.event[i],
                      n_censor = fit$n.censor[i], surv = fin(fit$surv[i]), std_err = fin(fit$std.err[i]),
                      lower = fin(fit$lower[i]), upper = fin(fit$upper[i]))
    med[[lev]] <- list(n = tab[lev, "records"], events = tab[lev, "events"],
                       median = fin(tab[lev, "median"]), lower = fin(tab[lev, "0.95LCL"]),
                       upper = fin(tab[lev, "0.95UCL"]))
    rm[[lev]] <- list(rmean = tab[lev, "rmean"], se = tab[lev, "se(rmean)"])
    s <- summary(survfit(Surv(time, event) ~ 1, data = d[g == lev, ]), times = milestones)
    ms[[lev]] <- list(time = s$time, n_risk = s$n.risk, surv = fin(s$surv), std_err = fin(s$std.err),
                      lower = fin(s$lower), upper = fin(s$upper))
  }
  out <- list(group = if (is.null(group)) NA else group, milestones = milestones, tau = tau, km = km, median = med,
              milestone = ms, rmst = rm)
  if (!is.null(group)) {
    sd <- survdiff(Surv(d$time, d$event) ~ g)
    df <- sum(sd$exp > 0) - 1
    out$logrank <- list(chisq = sd$chisq, df = df, p = pchisq(sd$chisq, df, lower.tail = FALSE),
                        groups = levels(g), observed = as.numeric(sd$obs), expected = as.numeric(sd$exp))
    z <- qnorm(0.975)
    out$rmst_diff <- list()
    for (lev in setdiff(levels(g), ref)) {
      est <- rm[[lev]]$rmean - rm[[ref]]$rmean
      se <- sqrt(rm[[lev]]$se^2 + rm[[ref]]$se^2)
      out$rmst_diff[[lev]] <- list(estimate = est, se = se, lower = est - z * se, upper = est + z * se,
                                   p = 2 * pnorm(-abs(est / se)))
    }
    out$reference <- ref
  }
  out
}

km_cases <- list(
  lung_sex = km_case(lung, "sex", c(30, 90, 180, 365), 365, ref = "male"),
  lung_all = km_case(lung, NULL, c(30, 90, 180, 365), 365),
  veteran_celltype = km_case(veteran, "celltype", c(30, 90, 180, 365), 180, ref = "squamous"),
  ovarian_rx = km_case(ovarian, "rx", c(30, 90, 180, 365), 365, ref = "rx1"),
  small_group = km_case(small, "group", c(0, 2, 4, 10, 12), 10, ref = "a")
)

# ---- Cox (Efron) and PH test -------------------------------------------------------------------------
cox_case <- function(d, formula, terms, transform = "km") {
  fit <- coxph(formula, data = d, ties = "efron", x = TRUE, y = TRUE, model = TRUE)
  s <- summary(fit)
  zph <- cox.zph(fit, transform = transform)
  nm <- function(v) as.list(setNames(as.numeric(v), names(coef(fit))))
  list(formula = deparse(formula), terms = terms, transform = transform,
       n = fit$n, n_event = fit$nevent, coef = as.list(coef(fit)), se = as.list(sqrt(diag(vcov(fit)))),
       p = nm(s$coefficients[, "Pr(>|z|)"]), hr_lower = nm(s$conf.int[, "lower .95"]),
       hr_upper = nm(s$conf.int[, "upper .95"]), loglik = fit$loglik, iter = fit$iter,
       zph = list(term = rownames(zph$table), chisq = zph$table[, "chisq"], df = zph$table[, "df"],
                  p = zph$table[, "p"]))
}
lung$sex <- relevel(lung$sex, "male")
veteran$celltype <- relevel(factor(veteran$celltype), "squamous")
ovarian$rx <- relevel(ovarian$rx, "rx1")
small_cox <- subset(small, group != "c")
small_cox$group <- relevel(factor(small_cox$group), "a")
cox_cases <- list(
  # terms: name -> list(kind, reference level) ; covariate columns otherwise numeric
  lung = cox_case(lung, Surv(time, event) ~ sex + age + ph.ecog,
                  list(sex = "male", age = NA, ph.ecog = NA)),
  lung_sex = cox_case(lung, Surv(time, event) ~ sex, list(sex = "male")),
  veteran = cox_case(veteran, Surv(time, event) ~ celltype + trt + karno + age,
                     list(celltype = "squamous", trt = "standard", karno = NA, age = NA)),
  veteran_identity = cox_case(veteran, Surv(time, event) ~ celltype + trt + karno + age,
                              list(celltype = "squamous", trt = "standard", karno = NA, age = NA),
                              transform = "identity"),
  veteran_celltype = cox_case(veteran, Surv(time, event) ~ celltype, list(celltype = "squamous")),
  ovarian = cox_case(ovarian, Surv(time, event) ~ rx + age, list(rx = "rx1", age = NA)),
  small = cox_case(small_cox, Surv(time, event) ~ group + x, list(group = "a", x = NA))
)

ref <- list(meta = list(r = R.version.string, survival = as.character(packageVersion("survival")),
                        script = "tests/reference/survival/make_reference.R"),
            km = km_cases, cox = cox_cases)
write_json(ref, file.path(here, "reference.json"), auto_unbox = TRUE, digits = NA, na = "null",
           pretty = TRUE)
cat("wrote", file.path(here, "reference.json"), "\n")
